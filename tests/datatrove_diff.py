"""Run lmforge's heuristic filters and datatrove's side by side on the same documents and list where they
disagree (keep vs drop, or a different cleaned text for C4). datatrove is a test-time dependency only."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.data.c4_filter import C4Config, C4Filter
from lmforge.data.fineweb_filter import FineWebFilter
from lmforge.data.gopher_quality import GopherQualityFilter
from lmforge.data.gopher_repetition import GopherRepetitionFilter

FILTERS = ("gopher_quality", "gopher_repetition", "c4", "fineweb")


@dataclass(frozen=True)
class Disagreement:
    filter: str
    doc_id: str
    ours: str  # "keep" or our drop reason
    theirs: str  # "keep" or datatrove's drop reason (C4: "keep (other text)" when only the text differs)


def _datatrove_filters() -> dict:
    from datatrove.pipeline import filters as dt

    c4 = C4Config()  # the paper's thresholds; datatrove's defaults swap them, so pass ours
    return {
        "gopher_quality": dt.GopherQualityFilter(),
        "gopher_repetition": dt.GopherRepetitionFilter(),
        "c4": dt.C4QualityFilter(min_num_sentences=c4.min_sentences, min_words_per_line=c4.min_words_per_line),
        "fineweb": dt.FineWebQualityFilter(),
    }


def _ours() -> dict:
    return {"gopher_quality": GopherQualityFilter(), "gopher_repetition": GopherRepetitionFilter(),
            "c4": C4Filter(), "fineweb": FineWebFilter()}


def _theirs(flt, doc_id: str, text: str) -> tuple[str, str]:
    from datatrove.data import Document as DTDocument

    doc = DTDocument(text=text, id=doc_id)
    result = flt.filter(doc)
    if result is True or (isinstance(result, tuple) and result[0]):
        return "keep", doc.text
    return (result[1] if isinstance(result, tuple) else "drop"), ""


def compare(docs: list[tuple[str, str]]) -> tuple[dict[str, int], list[Disagreement]]:
    """Run every filter on (id, text) pairs: (agreements per filter, the disagreements)."""
    ours, theirs = _ours(), _datatrove_filters()
    agree = dict.fromkeys(FILTERS, 0)
    found: list[Disagreement] = []
    for name in FILTERS:
        for doc_id, text in docs:
            if name == "c4":
                our_text, verdict = ours[name].clean(text)
            else:
                our_text, verdict = text, ours[name].check(text)
            our_label = "keep" if verdict.keep else verdict.reason
            their_label, their_text = _theirs(theirs[name], doc_id, text)
            same = (our_label == "keep") == (their_label == "keep")
            if same and name == "c4" and our_label == "keep" and _lines(our_text) != _lines(their_text):
                same, their_label = False, "keep (other text)"
            if same:
                agree[name] += 1
            else:
                found.append(Disagreement(name, doc_id, our_label, their_label))
    return agree, found


def _lines(text: str) -> list[str]:
    """Kept lines without blank ones: lmforge keeps paragraph breaks, datatrove joins lines with one newline."""
    return [line for line in text.split("\n") if line.strip()]


if __name__ == "__main__":  # agreement figures for the README: python -m tests.datatrove_diff
    import json

    from loguru import logger

    from lmforge.data.normalize import Normalizer
    from lmforge.data.sample_corpus import SampleConfig, generate
    from tests.data_edge_corpus import edge_corpus

    logger.remove()
    records, truth = generate(SampleConfig())
    norm = Normalizer()
    plain = [(r["id"], norm.normalize(r["text"])) for r, t in zip(records, truth, strict=True) if t["lang"] == "en"]
    report = {}
    for label, docs in (("edge", edge_corpus()), ("sample_corpus_en", plain)):
        agree, found = compare(docs)
        report[label] = {"documents": len(docs), **{f: round(agree[f] / len(docs), 4) for f in FILTERS}}
    print(json.dumps(report, indent=1))
