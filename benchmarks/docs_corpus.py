"""A natural-text corpus every Python install carries, no download: the Python documentation.

Documents: each topic of the language / library reference that `help()` shows (`pydoc_data.topics.topics`, ~465k
characters on 3.11) and, for each standard-library module (sys.prefix's lib/python3.X, packages included; tests,
site-packages and idlelib's tests left out), its docstrings (`ast.get_docstring` of the module, its classes and
functions; ~1.8M characters), one module one document. English prose with code examples: the weights of a model
trained on it carry sharp structure (words, grammar, the API's names), unlike the embedded corpus, whose entropy is
mostly uniformly random slot fillers.

Split: by a hash of the document's name (`topic:NAME` / `module:a.b`), so a module never straddles two splits and the
split is the same on every machine with the same Python: 12% held-out, 6% calibration, the rest train. A paragraph
that also occurs in a train document (copied docstrings, a shared license line) is dropped from the held-out and
calibration documents, so the held-out text is never text the model was trained on.

The corpus depends on the Python version (3.11 and 3.12 document different things): `fingerprint()` names it.
"""

import ast
import hashlib
import re
import sys
import sysconfig
from pathlib import Path

SPLITS = ("train", "calibration", "heldout")
_HELDOUT, _CALIBRATION = 12, 6  # percent of documents (by name hash)
_SKIP = re.compile(r"(^|/)(site-packages|test|tests|idle_test)/|(^|/)test_[^/]*\.py$")
_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def split_of(name: str) -> str:
    """The split of the document `name`: a stable hash, not Python's salted hash()."""
    bucket = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % 100
    return "heldout" if bucket < _HELDOUT else "calibration" if bucket < _HELDOUT + _CALIBRATION else "train"


def module_docstrings(path: Path) -> list[str]:
    """The docstrings of a module file, in source order (module, then classes and functions as they appear)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):  # lib2to3 fixtures, a stray non-UTF-8 file
        return []
    nodes = sorted((n for n in ast.walk(tree) if isinstance(n, _DOCUMENTED)), key=lambda n: getattr(n, "lineno", 0))
    return [d.strip() for d in (ast.get_docstring(n) for n in nodes) if d and d.strip()]


def raw_documents(stdlib: Path | None = None) -> list[tuple[str, list[str]]]:
    """(name, paragraphs) of every document, sorted by name: the reference topics (one paragraph each) and the
    standard-library modules (one paragraph per docstring)."""
    from pydoc_data.topics import topics

    docs = [(f"topic:{key}", [text.strip()]) for key, text in topics.items() if text.strip()]
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if _SKIP.search(rel):
            continue
        name = rel[:-3].replace("/", ".").removesuffix(".__init__")
        paragraphs = module_docstrings(path)
        if paragraphs:
            docs.append((f"module:{name}", paragraphs))
    return sorted(docs)


def documents(stdlib: Path | None = None) -> dict[str, list[tuple[str, str]]]:
    """{split: [(name, text)]}: the documents of each split, docstrings joined by blank lines; held-out and
    calibration documents without any paragraph (text between blank lines) that a train document holds: docstrings
    copied or partly copied between modules (json's parse_float text, a base class's) stay on the train side."""
    raw = raw_documents(stdlib)
    seen_in_train = {block for name, paragraphs in raw if split_of(name) == "train"
                     for p in paragraphs for block in p.split("\n\n")}
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    for name, paragraphs in raw:
        split = split_of(name)
        if split != "train":
            kept = ("\n\n".join(b for b in p.split("\n\n") if b not in seen_in_train) for p in paragraphs)
            paragraphs = [p for p in kept if p.strip()]
        if paragraphs:
            out[split].append((name, "\n\n".join(paragraphs)))
    return out


def split_text(docs: dict[str, list[tuple[str, str]]], split: str) -> str:
    """One split as one text (documents separated by blank lines): what calibration / held-out windows are cut from."""
    return "\n\n".join(text for _, text in docs[split])


def fingerprint(docs: dict[str, list[tuple[str, str]]], splits: tuple[str, ...] = ("train",)) -> str:
    """A short digest of `splits` of the corpus (default the train split: the cache key of a model trained on it; it
    changes with the Python version)."""
    digest = hashlib.sha256(f"{sys.version_info[:2]}".encode())
    for split in splits:
        for name, text in docs[split]:
            digest.update(f"{split}\0{name}\0{text}\0".encode())
    return digest.hexdigest()[:12]


def stats(docs: dict[str, list[tuple[str, str]]]) -> dict:
    return {split: {"documents": len(items), "characters": sum(len(t) for _, t in items)}
            for split, items in docs.items()}


if __name__ == "__main__":
    import json

    corpus = documents()
    print(json.dumps({"python": sys.version.split()[0], "fingerprint": fingerprint(corpus, SPLITS), **stats(corpus)},
                     indent=1))
