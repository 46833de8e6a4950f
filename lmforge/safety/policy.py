"""A safety policy: categories of content, how each is detected and what happens when it is (NeMo Guardrails'
input / output rails, Llama Guard's hazard taxonomy), read from a TOML file.

    refusal = "I can't help with that."      # the answer to a blocked input
    classifier = "tox_clf"                   # optional: a directory from `lmforge safety train` (relative paths:
                                             # to the TOML file)
    [categories.violence]
    action = "block"                         # block (refuse / cut the answer), redact, flag (count only)
    apply_to = ["input", "output"]
    words = ["pipe bomb"]                    # case-insensitive whole words or phrases
    patterns = ['(?i)how (do|to) (i )?make (a )?bomb']   # regular expressions
    pii = false                              # e-mails, phones, IPs (the data pipeline's PII step)
    classifier_label = "toxic"               # this category also fires when P(label) >= threshold
    threshold = 0.8
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.common.errors import LmforgeError

ACTIONS = ("block", "redact", "flag")
STAGES = ("input", "output")
DEFAULT_POLICY = Path(__file__).with_name("default_policy.toml")
_CATEGORY_KEYS = {"action", "apply_to", "words", "patterns", "pii", "classifier_label", "threshold"}
_TOP_KEYS = {"refusal", "classifier", "hold_back", "categories"}


@dataclass(frozen=True)
class Category:
    name: str
    action: str = "block"
    apply_to: tuple[str, ...] = STAGES
    words: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    pii: bool = False
    classifier_label: str | None = None
    threshold: float = 0.8

    def __post_init__(self) -> None:
        where = f"category {self.name!r}"
        if not re.fullmatch(r"[A-Za-z0-9_/-]{1,64}", self.name):
            raise LmforgeError(f"{where}: names are 1-64 letters, digits, '_', '-' or '/'")
        if self.action not in ACTIONS:
            raise LmforgeError(f"{where}: action={self.action!r}; allowed: {', '.join(ACTIONS)}")
        for key in ("apply_to", "words", "patterns"):
            value = getattr(self, key)
            if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
                raise LmforgeError(f"{where}: {key} must be a list of strings, got {value!r:.80}")
        if not isinstance(self.pii, bool) or not isinstance(self.threshold, (int, float)):
            raise LmforgeError(f"{where}: pii must be true/false and threshold a number")
        bad = [s for s in self.apply_to if s not in STAGES]
        if bad or not self.apply_to:
            raise LmforgeError(f"{where}: apply_to={list(self.apply_to)!r}; allowed: a non-empty list of "
                               f"{' and '.join(STAGES)}")
        if any(not isinstance(w, str) or not w.strip() for w in self.words):
            raise LmforgeError(f"{where}: words must be non-empty strings")
        for pattern in self.patterns:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as err:
                raise LmforgeError(f"{where}: pattern {pattern!r} is not a regular expression: {err}") from None
        if not 0.0 < self.threshold <= 1.0:
            raise LmforgeError(f"{where}: threshold={self.threshold}; allowed: (0, 1]")
        if not (self.words or self.patterns or self.pii or self.classifier_label):
            raise LmforgeError(f"{where} detects nothing: give words, patterns, pii = true or classifier_label")

    def applies(self, stage: str) -> bool:
        return stage in self.apply_to


@dataclass(frozen=True)
class SafetyPolicy:
    categories: tuple[Category, ...]
    refusal: str = "I'm sorry, but I can't help with that."
    classifier: Path | None = None
    hold_back: int = 0  # output characters held back for patterns and the classifier (words need none)
    source: str = "<inline>"
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.categories:
            raise LmforgeError(f"{self.source}: a policy needs at least one [categories.NAME] table")
        object.__setattr__(self, "names", tuple(c.name for c in self.categories))
        if len(set(self.names)) != len(self.names):
            raise LmforgeError(f"{self.source}: category names repeat")
        if not 0 <= self.hold_back <= 4096:
            raise LmforgeError(f"{self.source}: hold_back={self.hold_back}; allowed: 0..4096 characters")
        if any(c.classifier_label for c in self.categories) and self.classifier is None:
            raise LmforgeError(f"{self.source}: a category names a classifier_label but the policy has no "
                               "classifier = \"DIR\" (train one with `lmforge safety train`)")


def load_policy(path: str | Path | None = None) -> SafetyPolicy:
    """The policy in TOML file `path` (None: lmforge's default policy)."""
    path = DEFAULT_POLICY if path is None else Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LmforgeError(f"safety policy not found: {path}") from None
    except (OSError, UnicodeError, tomllib.TOMLDecodeError) as err:
        raise LmforgeError(f"cannot read safety policy {path}: {err}") from None
    return policy_from_dict(data, source=str(path), root=path.parent)


def policy_from_dict(data: dict, source: str = "<inline>", root: Path | None = None) -> SafetyPolicy:
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise LmforgeError(f"{source}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    categories = []
    tables = data.get("categories", {})
    if not isinstance(tables, dict):
        raise LmforgeError(f"{source}: 'categories' must be tables [categories.NAME]")
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise LmforgeError(f"{source}: categories.{name} must be a table")
        unknown = set(table) - _CATEGORY_KEYS
        if unknown:
            raise LmforgeError(f"{source}: categories.{name} has unknown key(s) {sorted(unknown)}; allowed: "
                               f"{sorted(_CATEGORY_KEYS)}")
        try:
            categories.append(Category(name=name, **{k: tuple(v) if isinstance(v, list) else v
                                                     for k, v in table.items()}))
        except TypeError as err:
            raise LmforgeError(f"{source}: categories.{name}: {err}") from None
    classifier = data.get("classifier")
    if classifier is not None:
        classifier = Path(classifier)
        if not classifier.is_absolute() and root is not None:
            classifier = root / classifier
    refusal = data.get("refusal", SafetyPolicy.refusal)
    hold_back = data.get("hold_back", 0)
    if not isinstance(refusal, str) or not refusal or not isinstance(hold_back, int):
        raise LmforgeError(f"{source}: refusal must be a non-empty string and hold_back an integer")
    return SafetyPolicy(tuple(categories), refusal=refusal, classifier=classifier, hold_back=hold_back,
                        source=source)
