"""Find and check lm-eval task files before a run, so that a user's mistake is one line, not a traceback from
inside lm-evaluation-harness: a task file or name that does not exist, YAML that does not parse, a data file that is
missing, an item without the field the prompt or the answer template reads.

Tasks are YAML files in lm-eval's format. The project's own (lmforge_mc, lmforge_gsm, lmforge_ceval,
lmforge_ceval_gen, lmforge_instruct) live in lmforge/eval/tasks/ and read their JSON-lines data through
`custom_dataset: !function local_data.load`, relative to the YAML; a user's may use `dataset_path: json` with
`dataset_kwargs: {data_files: ...}` (lm-eval reads those relative to the working directory). Nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lmforge.common.errors import LmforgeError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
LOCAL_FORMATS = ("json", "csv", "parquet", "text", "arrow")
OUTPUT_TYPES = ("multiple_choice", "generate_until", "loglikelihood", "loglikelihood_rolling")
TEMPLATE_KEYS = ("doc_to_text", "doc_to_target", "doc_to_choice")


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps lm-eval's `!function module.name` tags as their text (they are imported by lm-eval)."""


_Loader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


@dataclass
class TaskFile:
    name: str
    path: Path
    config: dict
    data_files: dict[str, list[Path]] = field(default_factory=dict)  # split -> files (empty: not checked)


def read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LmforgeError(f"cannot read task file {path}: {err}") from None
    try:
        config = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise LmforgeError(f"task file {path} is not valid YAML: {problem}{where}") from None
    if not isinstance(config, dict):
        raise LmforgeError(f"task file {path} must hold a YAML mapping (task:, doc_to_text:, ...), "
                           f"got {type(config).__name__}")
    if "include" in config:  # lm-eval's base file: keys of this file override it
        base = read_yaml(path.parent / str(config["include"]))
        config = {**base, **{k: v for k, v in config.items() if k != "include"}}
    return config


def _data_files(config: dict, path: Path) -> dict[str, list[Path]]:
    kwargs = config.get("dataset_kwargs") or {}
    files = kwargs.get("data_files") if isinstance(kwargs, dict) else None
    custom = str(config.get("custom_dataset", ""))
    if files is None:
        if config.get("dataset_path") in LOCAL_FORMATS:
            raise LmforgeError(f"task file {path}: dataset_path {config['dataset_path']!r} needs "
                               "dataset_kwargs.data_files (the local files to read)")
        return {}
    if not isinstance(files, dict):
        files = {"train": files}
    base = path.parent if custom.endswith("local_data.load") else Path.cwd()
    return {split: [base / str(f) for f in ([f] if isinstance(f, str) else list(f or []))]
            for split, f in files.items()}


def check_task_file(path: Path) -> TaskFile:
    config = read_yaml(path)
    name = config.get("task")
    if not isinstance(name, str) or not name:
        raise LmforgeError(f"task file {path} has no 'task:' name")
    kind = config.get("output_type", "generate_until")
    if kind not in OUTPUT_TYPES:
        raise LmforgeError(f"task {name} ({path}): output_type {kind!r}; allowed: {', '.join(OUTPUT_TYPES)}")
    if kind != "loglikelihood_rolling" and "doc_to_target" not in config:
        raise LmforgeError(f"task {name} ({path}) has no doc_to_target (the answer)")
    files = _data_files(config, path)
    for split, paths in files.items():
        for p in paths:
            if not p.is_file():
                raise LmforgeError(f"task {name}: data file not found: {p} (split {split}, from {path})")
    return TaskFile(name, path, config, files)


def local_tasks(include: list[Path]) -> dict[str, Path]:
    """Task name -> YAML file, over the project's task directory and `include` directories (later ones win)."""
    found: dict[str, Path] = {}
    for directory in (TASKS_DIR, *include):
        if not directory.is_dir():
            raise LmforgeError(f"--include-path {directory} is not a directory")
        for path in sorted(directory.rglob("*.y*ml")):
            try:
                config = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
            except (yaml.YAMLError, OSError, UnicodeDecodeError):
                continue  # reported if the task is asked for by path; a broken neighbour does not block others
            if isinstance(config, dict) and isinstance(config.get("task"), str):
                found[config["task"]] = path
    return found


def resolve_tasks(specs: list[str], include: list[Path]) -> list[TaskFile]:
    """Each spec is a task name (project tasks and --include-path ones) or a path to a task YAML file."""
    if not specs:
        raise LmforgeError("--tasks is empty; give task names or task YAML files, comma-separated")
    known = None
    tasks = []
    for spec in specs:
        if spec.endswith((".yaml", ".yml")) or "/" in spec:
            path = Path(spec).expanduser()
            if not path.is_file():
                raise LmforgeError(f"task file not found: {spec}")
        else:
            known = known if known is not None else local_tasks(include)
            if spec not in known:
                raise LmforgeError(f"unknown task {spec!r}; local tasks: {', '.join(sorted(known))} "
                                   "(or pass a task YAML file, or --include-path DIR)")
            path = known[spec]
        tasks.append(check_task_file(path.resolve()))
    return tasks


def _rows(path: Path) -> list[dict] | None:
    """The items of a JSON / JSON-lines file; None for formats not checked here (csv, parquet...)."""
    if path.suffix not in (".jsonl", ".json"):
        return None
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
            return data if isinstance(data, list) else None
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise LmforgeError(f"data file {path} is not valid JSON: {err.msg} at line {err.lineno}") from None


def template_fields(template) -> set[str]:
    """The document fields a Jinja template reads (`{{answer}}`, `{{['A','B'].index(answer)}}` -> {'answer'})."""
    if not isinstance(template, str) or "{" not in template:
        return set()
    from jinja2 import Environment, meta
    from jinja2.exceptions import TemplateSyntaxError

    env = Environment()
    try:
        return set(meta.find_undeclared_variables(env.parse(template))) - set(env.globals)
    except TemplateSyntaxError as err:
        raise LmforgeError(f"template {template[:60]!r} is not valid Jinja: {err.message}") from None


def check_items(task: TaskFile) -> None:
    """Every item of the splits the task reads has the fields its templates use (skipped with process_docs,
    which may add fields)."""
    if task.config.get("process_docs"):
        return
    splits = {task.config.get(k) for k in ("test_split", "validation_split", "fewshot_split", "training_split")}
    for key in TEMPLATE_KEYS:
        fields = template_fields(task.config.get(key))
        if not fields:
            continue
        for split, paths in task.data_files.items():
            if split not in splits:
                continue
            for path in paths:
                for n, row in enumerate(_rows(path) or [], 1):
                    missing = sorted(f for f in fields if not isinstance(row, dict) or f not in row)
                    if missing:
                        have = ", ".join(sorted(row)) if isinstance(row, dict) else type(row).__name__
                        raise LmforgeError(f"task {task.name}: item {n} of {path} has no field "
                                           f"{missing[0]!r}, which {key} reads (its fields: {have})")
