"""Edge cases for the heuristic filters, a few per rule, on both sides of each threshold and on the spots where
implementations differ (tokenisation, whitespace, citations, abbreviations). Deterministic: ids name the case."""

from __future__ import annotations

S = [
    "The library opens at nine every morning except on public holidays.",
    "Volunteers repair donated bicycles in the workshop behind the station.",
    "Our annual report describes how the grant money was spent last year.",
    "Children from three villages share the new bus to the secondary school.",
    "The bakery on the corner sells rye bread made from local grain.",
    "Most residents agreed that the bridge should be rebuilt before winter.",
    "A storm damaged the roof of the town hall during the night.",
    "The museum has added a room for paintings by local artists.",
]


def prose(n: int, start: int = 0) -> str:
    return "\n".join(S[(start + i) % len(S)] for i in range(n))


def words(n: int, word: str = "house") -> str:
    return " ".join(["the", "with"] + [word] * (n - 2))


def _gopher_quality() -> dict[str, str]:
    base = words(100).split()
    hashes = lambda k: " ".join(w + ("#" if 2 <= i < 2 + k else "") for i, w in enumerate(base))  # noqa: E731
    return {
        "words_49": words(49) + ".", "words_51": words(51) + ".",
        "words_55_with_dashes": words(45) + " -" * 10,
        "mean_len_short": " ".join(["the", "with"] + ["ab"] * 60 + ["abcd"] * 40),
        "mean_len_long": " ".join(["the", "with"] + ["abcdefghijkl"] * 98),
        "hash_10": hashes(10), "hash_12": hashes(12),
        "hash_7_ellipsis_7": " ".join(w + ("#" if 2 <= i < 9 else "..." if 9 <= i < 16 else "")
                                      for i, w in enumerate(base)),
        "ellipsis_tokens_11": " ".join(base[:50] + ["…"] * 11 + base[50:]),
        "bullets_dash": "\n".join("- " + S[i % 8] for i in range(10)),
        "bullets_dot": "\n".join("• " + S[i % 8] for i in range(10)),
        "bullets_star": "\n".join("* " + S[i % 8] for i in range(10)),
        "ellipsis_lines_4_of_10": "\n".join(S[i % 8][:-1] + ("..." if i < 4 else ".") for i in range(10)),
        "alpha_words_75pct": " ".join(["the", "with"] + ["1234"] * 25 + ["house"] * 73),
        "stop_words_capitalised": " ".join(["The", "With"] + ["house"] * 60),
        "stop_words_one": " ".join(["the"] + ["house"] * 60),
        "comma_heavy_prose": ", ".join(S[i % 8][:-1] for i in range(12)) + ".",
    }


def _gopher_repetition() -> dict[str, str]:
    para = [S[i] + " " + S[(i + 3) % 8] for i in range(8)]
    return {
        "dup_lines_3_of_10": "\n".join(S[:7] + [S[0], S[1], S[2]]),
        "dup_lines_4_of_10": "\n".join(S[:6] + [S[0], S[1], S[2], S[3]]),
        "dup_paragraphs": "\n\n".join(para[:5] + para[:3]),
        "top_2gram": " ".join(["big cat"] * 30 + S[:2]),
        "dup_10grams": " ".join([S[0]] * 3 + S[1:4]),
        "dup_5grams_light": " ".join(S) + " " + " ".join(S[0].split()[:5]),
        "prose_long": " ".join(S * 1),
    }


def _c4() -> dict[str, str]:
    return {
        "sentences_3": prose(3), "sentences_2": prose(2),
        "words_per_line_4": prose(3) + "\nIt was fine today.",
        "ellipsis_line": prose(3) + "\nAnd then the story went on and on...",
        "unicode_ellipsis_line": prose(3) + "\nAnd then the story went on and on…",
        "citation_attached": prose(2) + "\nThe bridge was rebuilt in 1921 by the town council.[1]",
        "citation_spaced": prose(2) + "\nThe bridge was rebuilt in 1921 by the council. [2]",
        "citation_needed": prose(2) + "\nIt is the oldest stone bridge in the whole county.[citation needed]",
        "abbreviations_one_line": "Dr. J. Smith moved to the U.S. in May, e.g. to build bridges, i.e. steel ones.\n"
                                  "She left early. He stayed late. Nobody minded at all.",
        "curly_in_short_line": prose(3) + "\nfunction() { x }",
        "curly_in_kept_line": prose(3) + "\nThe value of {x} is set by the user here.",
        "lorem_in_short_line": prose(3) + "\nlorem ipsum",
        "javascript_line": prose(3) + "\nPlease enable JavaScript to view this page properly.",
        "policy_line": prose(3) + "\nThis site uses cookies to improve your experience here.",
        "single_quote_end": prose(3) + "\nHe said that the answer was 'maybe later'",
        "curly_quote_end": prose(3) + "\nHe said that the answer was “maybe later”",
        "long_word": prose(3) + "\nThis line has a " + "x" * 1001 + " word in it.",
        "trailing_spaces": "\n".join(line + "   " for line in S[:4]),
        "paragraphs": prose(2) + "\n\n" + prose(2, 2),
    }


def _fineweb() -> dict[str, str]:
    short = ["Home", "About us", "Contact", "News", "Shop"]
    return {
        "punct_lines_1_of_9": "\n".join([S[0]] + [S[i % 8][:-1] for i in range(1, 9)]),
        "punct_lines_2_of_9": "\n".join(S[:2] + [S[i % 8][:-1] for i in range(2, 9)]),
        "short_lines_2_of_3": "\n".join(short[:4] + S[:2]),
        "short_lines_7_of_10": "\n".join(short + ["Blog", "Help"] + S[:3]),
        "dup_line_chars": "\n".join(S + [S[0]]),
        "newlines_per_word": "\n".join(f"{w}." for w in ("Apples", "Pears", "Plums") * 5),
        "trailing_space_lines": "\n".join(line + " " for line in S),
        "question_exclaim": "\n".join(S[i][:-1] + ("?" if i % 2 else "!") for i in range(8)),
    }


def edge_corpus() -> list[tuple[str, str]]:
    """(id, text) pairs; the id is '<filter>/<case>'."""
    out = []
    for name, cases in (("gopher_quality", _gopher_quality()), ("gopher_repetition", _gopher_repetition()),
                        ("c4", _c4()), ("fineweb", _fineweb())):
        out += [(f"{name}/{case}", text) for case, text in cases.items()]
    return out
