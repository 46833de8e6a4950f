"""Gopher quality and repetition filters on crafted documents, on both sides of every threshold."""

import pytest

from lmforge.common.errors import ConfigError
from lmforge.data.gopher_quality import GopherQualityConfig, GopherQualityFilter
from lmforge.data.gopher_repetition import GopherRepetitionConfig, GopherRepetitionFilter

PROSE = (
    "The river bends slowly past the old mill, and the miller's children watch boats drift toward town.\n"
    "Each spring the water rises with snowmelt from distant mountains that few villagers have visited.\n"
    "Farmers plant barley on terraces above the flood line, a habit their grandparents learned the hard way.\n"
    "Merchants arrive by barge carrying salt, copper pots, woollen cloth and news from the capital.\n"
    "In the evenings the square fills with music, arguments about prices, and the smell of roasted chestnuts.\n"
    "A small school near the chapel teaches reading, arithmetic and the history of the valley to forty pupils.\n"
)


def words(n: int, word: str = "house") -> str:
    """n words: the first two are stop words, the rest `word`."""
    return " ".join(["the", "with"] + [word] * (n - 2))


def reason(flt, text):
    verdict = flt.check(text)
    return "keep" if verdict.keep else verdict.reason


def test_prose_passes_both_filters():
    assert GopherQualityFilter().check(PROSE).keep
    assert GopherRepetitionFilter().check(PROSE).keep


def test_word_count_bounds():
    flt = GopherQualityFilter(GopherQualityConfig(min_words=50, max_words=60))
    assert reason(flt, words(49)) == "too_few_words"
    assert reason(flt, words(50)) == "keep"
    assert reason(flt, words(60)) == "keep"
    assert reason(flt, words(61)) == "too_many_words"


def test_mean_word_length_bounds():
    flt = GopherQualityFilter(GopherQualityConfig(min_stop_words=0))
    # 100 words: a*"ab" + (100-a)*"abcd" -> mean = 4 - 2a/100 ; mean 3.0 at a=50
    mk = lambda a, short, long: " ".join([short] * a + [long] * (100 - a))  # noqa: E731
    assert reason(flt, mk(50, "ab", "abcd")) == "keep"
    assert reason(flt, mk(52, "ab", "abcd")) == "mean_word_length_too_short"
    # mean = 10 with all 10-letter words; one 14-letter word pushes it over
    assert reason(flt, mk(0, "", "abcdefghij")) == "keep"
    assert reason(flt, " ".join(["abcdefghij"] * 99 + ["abcdefghijklmnopqrstuvwxyz"])) == "mean_word_length_too_long"


def test_symbol_word_ratio():
    flt = GopherQualityFilter()
    base = words(100).split()
    ten = " ".join(w + ("#" if 2 <= i < 12 else "") for i, w in enumerate(base))  # 10 / 100 words = 0.1
    eleven = " ".join(w + ("#" if 2 <= i < 13 else "") for i, w in enumerate(base))
    assert reason(flt, ten) == "keep"
    assert reason(flt, eleven) == "hash_word_ratio"
    # a lone "…" is punctuation, not a word: 10 / 100 words is allowed, 11 / 100 is not
    with_ellipses = lambda k: " ".join(base[:50] + ["…"] * k + base[50:])  # noqa: E731
    assert reason(flt, with_ellipses(10)) == "keep"
    assert reason(flt, with_ellipses(11)) == "ellipsis_word_ratio"


def test_hash_and_ellipsis_ratios_are_checked_separately():
    """Rae et al.: drop when the hash ratio OR the ellipsis ratio exceeds 0.1 -- not their sum."""
    flt = GopherQualityFilter()
    base = words(100).split()
    both = " ".join(w + ("#" if 2 <= i < 9 else "..." if 9 <= i < 16 else "") for i, w in enumerate(base))
    assert both.count("#") == 7 and both.count("...") == 7  # 0.07 each, 0.14 summed
    assert reason(flt, both) == "keep"


def test_punctuation_tokens_are_not_words():
    flt = GopherQualityFilter()
    text = words(45) + " -" * 10  # 55 whitespace tokens, 45 of them words
    assert reason(flt, text) == "too_few_words"
    assert reason(flt, words(50) + " -" * 10) == "keep"


def test_bullet_and_ellipsis_lines():
    flt = GopherQualityFilter()
    line = "the house with a garden and a gate"
    bullets = lambda k: "\n".join(("• " if i < k else "") + line for i in range(10))  # noqa: E731
    assert reason(flt, bullets(9)) == "keep"  # 0.9 is allowed
    assert reason(flt, bullets(10)) == "bullet_lines"
    ellipsis = lambda k: "\n".join(line + (" and so on..." if i < k else ".") for i in range(10))  # noqa: E731
    assert reason(flt, ellipsis(3)) == "keep"
    assert reason(flt, ellipsis(4)) == "ellipsis_lines"


def test_alpha_words_and_stop_words():
    flt = GopherQualityFilter(GopherQualityConfig(min_mean_word_length=0))
    mixed = lambda digits: " ".join(["the", "with"] + ["1234"] * digits + ["house"] * (98 - digits))  # noqa: E731
    assert reason(flt, mixed(20)) == "keep"  # 80% alphabetic words
    assert reason(flt, mixed(21)) == "alpha_words"
    assert reason(flt, " ".join(["the"] + ["house"] * 99)) == "stop_words"
    assert reason(flt, " ".join(["the", "and"] + ["house"] * 98)) == "keep"


def test_chinese_character_variant():
    flt = GopherQualityFilter(GopherQualityConfig.for_chinese())  # at least 100 characters
    sentence = "我们的城市在河边，这里有很多古老的房子和安静的街道。"  # 24 CJK characters
    body = "".join(c for c in sentence * 5 if c not in "，。")  # 120 characters, punctuation removed

    def zh(n: int) -> str:
        return "，".join(body[:n][i : i + 12] for i in range(0, n, 12)) + "。"

    assert reason(flt, zh(100)) == "keep"
    assert reason(flt, zh(99)) == "too_few_words"
    assert reason(flt, "城市房子街道河边古老安静" * 20) == "stop_words"
    # auto unit: the default config recognises Chinese and counts characters too
    assert reason(GopherQualityFilter(GopherQualityConfig(min_words=100)), zh(100)) == "keep"
    assert reason(GopherQualityFilter(GopherQualityConfig(min_words=100)), zh(99)) == "too_few_words"


def test_duplicate_lines_and_paragraphs():
    flt = GopherRepetitionFilter(GopherRepetitionConfig(top_ngrams=(), dup_ngrams=()))
    uniq = [f"line number {i} talks about subject {i} at length" for i in range(10)]
    # 10 lines, 3 duplicates = 0.3 allowed by count; by chars 3/10 > 0.2 -> char rule fires
    three = "\n".join(uniq[:7] + uniq[:3])
    assert reason(flt, three) == "dup_line_char_fraction"
    loose = GopherRepetitionFilter(GopherRepetitionConfig(dup_line_char_fraction=1.0, dup_para_char_fraction=1.0,
                                                          top_ngrams=(), dup_ngrams=()))
    assert reason(loose, three) == "keep"
    assert reason(loose, "\n".join(uniq[:6] + uniq[:4])) == "dup_line_fraction"
    two = "\n".join(uniq[:8] + uniq[:2])  # 2/10 lines, 0.2 of characters: both allowed
    assert reason(flt, two) == "keep"
    paras = "\n\n".join(uniq[:6] + uniq[:4])
    assert reason(loose, paras) == "dup_para_fraction"
    assert reason(flt, "\n\n".join(uniq[:8] + uniq[:2])) == "keep"
    long_dup = "\n\n".join(["short one", "short two", "x " * 200, "x " * 200])
    assert reason(flt, long_dup) == "dup_para_char_fraction"


def _words_with_top_bigram(fraction_pairs: int, total_fillers: int) -> str:
    fillers = [f"w{i:03d}" for i in range(total_fillers)]  # 4-char unique words
    return " ".join(["ab", "cd"] * fraction_pairs + fillers)


def test_top_ngram_fraction():
    flt = GopherRepetitionFilter(GopherRepetitionConfig(top_ngrams=((2, 0.20),), dup_ngrams=()))
    # the bigram "ab cd" (4 chars) occurs k times; repeated "cd ab" also occurs k-1 times but is not the top.
    # total chars = 4k + 4*fillers. k=20, fillers=80: 80 / 400 = 0.20 -> keep; k=21: 84/404 > 0.2 -> drop
    assert reason(flt, _words_with_top_bigram(20, 80)) == "keep"
    assert reason(flt, _words_with_top_bigram(21, 80)) == "top_2gram_fraction"


def test_duplicated_ngram_fraction():
    flt = GopherRepetitionFilter(GopherRepetitionConfig(top_ngrams=(), dup_ngrams=((5, 0.15),)))
    uniq = [f"u{i:03d}" for i in range(200)]  # 4 chars each
    gram = uniq[:5]
    # appending the first 5-gram again duplicates 5 words = 20 chars; k copies -> 20k / (800 + 20k)
    doc = lambda k: " ".join(uniq + gram * k)  # noqa: E731
    assert reason(flt, doc(1)) == "keep"
    # two copies back to back also repeat the wrapped 5-grams: check the measured fraction crosses 0.15
    dropped = next(k for k in range(1, 20) if reason(flt, doc(k)) != "keep")
    assert reason(flt, doc(dropped)) == "dup_5gram_fraction"
    assert 20 * dropped / (800 + 20 * dropped) > 0.15 >= 20 * (dropped - 1) / (800 + 20 * (dropped - 1))


def test_config_validation_names_value():
    with pytest.raises(ConfigError, match="min_words=60"):
        GopherQualityConfig(min_words=60, max_words=50)
    with pytest.raises(ConfigError, match="unit='letters'"):
        GopherRepetitionConfig(unit="letters")
    with pytest.raises(ConfigError, match="dup_line_fraction=1.5"):
        GopherRepetitionConfig(dup_line_fraction=1.5)
