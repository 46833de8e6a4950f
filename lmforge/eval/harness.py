"""`python -m lmforge.eval.harness ...`: lm-evaluation-harness's own CLI (`lm_eval run --model lmforge ...`) with
lmforge's model registered and the project's task directory on the include path.

lm-eval 0.4 resolves `--model NAME` from its registry, filled by imports; this module imports the adapter first.
(pyproject.toml also declares the `lm_eval.models` entry point, for lm-eval versions that load plugins.)
"""

import sys

from lmforge.eval.task_files import TASKS_DIR


def main(argv: list[str] | None = None) -> None:
    import lm_eval.__main__ as lm_eval_main

    import lmforge.eval.lm_adapter  # noqa: F401 - registers --model lmforge

    argv = list(sys.argv[1:] if argv is None else argv)
    if ("--tasks" in argv or argv[:1] == ["ls"]) and "--include_path" not in argv:
        argv += ["--include_path", str(TASKS_DIR)]
    sys.argv = ["lm_eval", *argv]
    lm_eval_main.cli_evaluate()


if __name__ == "__main__":
    main()
