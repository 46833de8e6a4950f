"""C4 and FineWeb filters on crafted documents, on both sides of every threshold."""

import pytest

from lmforge.common.errors import ConfigError
from lmforge.data.c4_filter import C4Config, C4Filter
from lmforge.data.document import KEEP, Document, Drop
from lmforge.data.fineweb_filter import FineWebConfig, FineWebFilter

SENTENCES = [
    "The library opens at nine every morning except on public holidays.",
    "Volunteers repair donated bicycles in the workshop behind the station.",
    "Our annual report describes how the grant money was spent last year.",
    "Children from three villages share the new bus to the secondary school.",
    "The bakery on the corner sells rye bread made from local grain.",
    "Most residents agreed that the bridge should be rebuilt before winter.",
]


def reason(flt, text):
    verdict = flt.check(text)
    return "keep" if verdict.keep else verdict.reason


def c4_doc(n_sentences=5, extra=()):
    return "\n".join(list(SENTENCES[:n_sentences]) + list(extra))


def test_c4_keeps_clean_prose_and_removes_bad_lines():
    flt = C4Filter()
    text = c4_doc(5, ["Home | About | Contact", "Please enable JavaScript to view this page.",
                      "This site uses cookies to improve your experience.", "Too short.", "Read more"])
    cleaned, verdict = flt.clean(text)
    assert verdict.keep and cleaned == c4_doc(5)
    paragraphs = "\n\n".join(SENTENCES[:3]) + "\n\nMenu\n\n\n" + "\n".join(SENTENCES[3:])
    assert flt.clean(paragraphs) == ("\n\n".join(SENTENCES[:3]) + "\n\n" + "\n".join(SENTENCES[3:]), KEEP)


def test_c4_min_sentences_threshold():
    """The paper and TFDS: pages with fewer than 3 sentences go (datatrove's default is 5)."""
    flt = C4Filter()
    assert reason(flt, c4_doc(3)) == "keep"
    assert reason(flt, c4_doc(2)) == "too_few_sentences"
    assert reason(C4Filter(C4Config(min_sentences=5)), c4_doc(4)) == "too_few_sentences"
    assert reason(C4Filter(C4Config(min_sentences=2)), c4_doc(2)) == "keep"


def test_c4_min_words_per_line_threshold():
    """The paper and TFDS: a kept line has at least 5 words (datatrove's default is 3)."""
    flt = C4Filter(C4Config(min_sentences=1))
    assert reason(flt, "It was fine all day.") == "keep"  # 5 words
    assert reason(flt, "It was fine today.") == "no_lines_left"  # 4 words
    assert reason(C4Filter(C4Config(min_sentences=1, min_words_per_line=2)), "It rained.") == "keep"


def test_c4_sentence_count_skips_abbreviations():
    """'e.g.', 'U.S.', 'Dr.' and initials do not end sentences, so one long line is one sentence."""
    flt = C4Filter()
    line = "Dr. J. Smith moved to the U.S. in May, e.g. to work on bridges, i.e. steel ones."
    assert reason(flt, "\n".join([line, line])) == "too_few_sentences"  # 2 sentences, not 8
    assert reason(flt, "\n".join([line, line, line])) == "keep"
    assert reason(flt, "She left early. He stayed late. Nobody minded at all.") == "keep"  # 3 in one line


def test_c4_lines_ending_in_an_ellipsis_are_dropped():
    flt = C4Filter()
    for end in ("...", "…"):
        cleaned, verdict = flt.clean(c4_doc(3, [f"And then the story goes on and on{end}"]))
        assert verdict.keep and cleaned == c4_doc(3), end


def test_c4_removes_citation_markers_and_keeps_the_line():
    flt = C4Filter()
    cited = "The bridge was rebuilt in 1921 by the town council.[1]"
    cleaned, verdict = flt.clean(c4_doc(3, [cited, "It is the oldest stone bridge in the county.[citation needed]",
                                            "Its arches were widened in 1950. [edit]"]))
    assert verdict.keep
    assert cleaned.splitlines()[3:] == ["The bridge was rebuilt in 1921 by the town council.",
                                        "It is the oldest stone bridge in the county.",
                                        "Its arches were widened in 1950."]
    assert C4Filter(C4Config(remove_citations=False)).clean(c4_doc(3, [cited]))[0] == c4_doc(3)


def test_c4_terminal_punctuation_and_long_words():
    flt = C4Filter(C4Config(min_sentences=1))
    assert reason(flt, "A long line ending without punctuation") == "no_lines_left"
    no_count = C4Filter(C4Config(min_sentences=0))
    for end in (".", "!", "?", '"'):
        assert reason(no_count, f"A line ending with terminal punctuation{end}") == "keep"
    short = C4Config(min_sentences=1, max_word_length=5)
    assert reason(C4Filter(short), "Tiny words are fine here.") == "keep"
    assert reason(C4Filter(short), "Enormous words fail here too.") == "no_lines_left"


def test_c4_page_rules_and_switches():
    flt = C4Filter()
    assert reason(flt, c4_doc(6) + "\nLorem ipsum dolor sit amet.") == "lorem_ipsum"
    assert reason(flt, c4_doc(6) + "\nfunction() { return 1; }") == "curly_bracket"
    off = C4Filter(C4Config(filter_lorem_ipsum=False, filter_curly_bracket=False, filter_javascript=False,
                            filter_policy=False))
    cleaned, verdict = off.clean(c4_doc(5, ["Lorem ipsum dolor sit amet now.", "Use {braces} freely here please.",
                                            "Turn on javascript in your browser.", "Please read our privacy policy."]))
    assert verdict.keep and cleaned.count("\n") == 8


def test_c4_step_rewrites_or_drops_with_reason():
    step = C4Filter()
    out = step.apply(Document("a", c4_doc(5, ["menu"]), {"url": "u"}))
    assert isinstance(out, Document) and out.text == c4_doc(5) and out.meta == {"url": "u"}
    assert step.apply(Document("b", "lorem ipsum")) == Drop("c4:lorem_ipsum")


def test_c4_chinese_variant_counts_characters():
    flt = C4Filter(C4Config.for_chinese())
    line = "今天的天气很好。"  # 6 characters
    assert reason(flt, "\n".join([line] * 5)) == "keep"
    assert reason(flt, "\n".join(["天气好。"] * 5)) == "no_lines_left"  # 3 characters < 5


# ---------------------------------------------------------------- FineWeb


def test_fineweb_keeps_prose():
    assert reason(FineWebFilter(), "\n".join(SENTENCES)) == "keep"


def test_fineweb_line_punctuation_ratio():
    flt = FineWebFilter(FineWebConfig(max_short_line_ratio=1.0, max_newline_word_ratio=1.0))
    lines = lambda k: "\n".join(  # noqa: E731
        f"Heading number {i} without a stop{'.' if i < k else ''}" for i in range(25))
    assert reason(flt, lines(3)) == "keep"  # 3/25 = 0.12
    assert reason(flt, lines(2)) == "line_punct_ratio"  # 0.08


def test_fineweb_short_line_ratio():
    flt = FineWebFilter(FineWebConfig(max_newline_word_ratio=1.0))
    long_line = "This line is comfortably longer than thirty characters."
    doc = lambda short: "\n".join([f"Short {i}." for i in range(short)] + [f"{long_line} {i}." for i in range(100 - short)])  # noqa: E731,E501
    assert reason(flt, doc(67)) == "keep"
    assert reason(flt, doc(68)) == "short_line_ratio"
    # the length boundary: a line of exactly 30 characters is short, one of 31 is not
    thirty = lambda i: f"Line {i:03d} is exactly thirty c."[:29] + "."  # noqa: E731
    assert len(thirty(1)) == 30
    at_limit = "\n".join([thirty(i) for i in range(68)] + [f"{long_line} {i}." for i in range(32)])
    assert reason(flt, at_limit) == "short_line_ratio"
    above = "\n".join([thirty(i)[:-1] + "x." for i in range(68)] + [f"{long_line} {i}." for i in range(32)])
    assert len(thirty(1)[:-1] + "x.") == 31 and reason(flt, above) == "keep"


def test_fineweb_duplicate_line_characters():
    flt = FineWebFilter()
    body = "\n".join(f"{s} Paragraph {i} continues with more words here." for i, s in enumerate(SENTENCES * 5))
    total = len(body.replace("\n", ""))
    small = "Yes."  # 4 repeated characters
    repeats_ok = int(0.01 * total) // len(small)
    assert reason(flt, body + ("\n" + small) * (repeats_ok + 1)) == "keep"  # first copy is not a duplicate
    assert reason(flt, body + ("\n" + small) * (repeats_ok + 3)) == "dup_line_char_ratio"


def test_fineweb_list_like_documents():
    flt = FineWebFilter(FineWebConfig(max_short_line_ratio=1.0))
    # 10 lines of 3 words: 9 newlines / 30 words = 0.3 allowed; 10 lines of 2 words: 9/20 dropped
    three = "\n".join(f"Item {i} here." for i in range(10))
    two = "\n".join(f"Item {i}." for i in range(10))
    assert reason(flt, three) == "keep"
    assert reason(flt, two) == "list_ratio"


def test_fineweb_chinese_variant():
    flt = FineWebFilter(FineWebConfig.for_chinese())
    long_zh = "我们在河边的小城市里住了很多年"  # 15 characters > 10
    assert reason(flt, "\n".join([f"{long_zh}{i}。" for i in range(10)])) == "keep"
    assert reason(flt, "\n".join([f"短句{i}。" for i in range(10)] + [long_zh + "。"])) == "short_line_ratio"


def test_fineweb_config_validation():
    with pytest.raises(ConfigError, match="max_short_line_ratio=2"):
        FineWebConfig(max_short_line_ratio=2)
    with pytest.raises(ConfigError, match="min_sentences=-1"):
        C4Config(min_sentences=-1)
