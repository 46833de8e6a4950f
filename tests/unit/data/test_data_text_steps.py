"""URL filter, HTML extraction, normalisation and PII masking."""

import pytest

from lmforge.common.errors import ConfigError
from lmforge.data.document import Document, Drop
from lmforge.data.html_extract import HtmlExtractConfig, HtmlExtractor
from lmforge.data.normalize import NormalizeConfig, Normalizer
from lmforge.data.pii import PiiConfig, PiiMasker
from lmforge.data.url_filter import UrlFilter, UrlFilterConfig


def test_url_filter_domains_words_and_regex(tmp_path):
    blocklist = tmp_path / "domains.txt"
    blocklist.write_text("# comment\nbad-site.org\n")
    flt = UrlFilter(UrlFilterConfig(blocked_domains=("spam.example",), blocked_words=("casino",),
                                    blocked_regex=r"/ads?/", blocklist_file=str(blocklist)))
    assert flt.check_url("https://en.wikipedia.org/wiki/River").keep
    assert flt.check_url("https://spam.example/page").reason == "blocked_domain"
    assert flt.check_url("http://www.sub.spam.example:8080/x").reason == "blocked_domain"
    assert flt.check_url("https://notspam.example/x").keep  # suffix match is by whole labels
    assert flt.check_url("https://bad-site.org/").reason == "blocked_domain"
    assert flt.check_url("https://example.com/best-casino-bonus").reason == "blocked_word"
    assert flt.check_url("https://example.com/casinos-history").keep  # whole tokens only
    assert flt.check_url("https://example.com/ads/1").reason == "blocked_regex"


def test_url_filter_step_and_missing_url():
    keep = UrlFilter()
    doc = Document("1", "text", {"url": "https://spam.example/"})
    assert keep.apply(doc) == Drop("url_filter:blocked_domain")
    assert keep.apply(Document("2", "text")) == Document("2", "text")
    assert UrlFilter(UrlFilterConfig(on_missing="drop")).apply(Document("2", "t")) == Drop("url_filter:missing_url")
    with pytest.raises(ConfigError, match="on_missing='ignore'"):
        UrlFilterConfig(on_missing="ignore")
    with pytest.raises(ConfigError, match="blocked_regex"):
        UrlFilterConfig(blocked_regex="(unclosed")


HTML = """<html><head><title>T</title><script>var tracking = 1;</script><style>p {color: red}</style></head>
<body><nav><a href="/">Home</a> <a href="/about">About</a></nav>
<article><h1>River towns</h1><p>The river bends past the old mill, and the children watch the boats.</p>
<p>Merchants arrive by barge with salt &amp; copper.</p><ul><li>First item</li><li>Second item</li></ul></article>
<footer>Copyright 2024 Example Corp. All rights reserved.</footer></body></html>"""


def test_html_extraction_drops_markup_scripts_and_boilerplate():
    text = HtmlExtractor().extract(HTML)
    assert "The river bends past the old mill" in text and "salt & copper" in text
    assert "tracking" not in text and "color" not in text and "<p>" not in text
    full = HtmlExtractor(HtmlExtractConfig(main_content=False)).extract(HTML)
    assert "Copyright" in full and "First item" in full  # the footer is only removed in main-content mode
    step = HtmlExtractor(HtmlExtractConfig(source_field="html"))
    out = step.apply(Document("1", "", {"html": HTML, "url": "u"}))
    assert "river bends" in out.text and out.meta == {"url": "u"}
    assert step.apply(Document("2", "")) == Drop("html_extract:missing_html")


def test_normalize_unicode_and_whitespace():
    norm = Normalizer()
    raw = "Cafe\u0301\u00a0 au\tlait\r\n\r\n\r\n\r\nzero\u200bwidth\x07  \n   trailing   "
    assert norm.normalize(raw) == "Café au lait\n\nzerowidth\ntrailing"
    assert Normalizer(NormalizeConfig(form="NFKC")).normalize("ﬁ ①") == "fi 1"
    assert Normalizer(NormalizeConfig(max_blank_lines=0)).normalize("a\n\n\nb") == "a\nb"
    with pytest.raises(ConfigError, match="form='NFX'"):
        NormalizeConfig(form="NFX")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Mail john.doe+news@example.co.uk now.", "Mail <EMAIL> now."),
        ("Call +1 415-555-0132 or (030) 1234 5678.", "Call <PHONE> or <PHONE>."),
        ("Appelez le 06 12 34 56 78 demain.", "Appelez le <PHONE> demain."),
        ("Host 192.168.10.254 answered.", "Host <IP_ADDRESS> answered."),
        ("IPv6 2001:db8::8a2e:370:7334 and ::1 too.", "IPv6 <IP_ADDRESS> and <IP_ADDRESS> too."),
        ("Dated 2021-05-12, we sold 1,000 units at 3.50 in 2019.", None),  # no PII: unchanged
        ("Not an IP: 300.1.2.3 nor a phone: 12-34.", None),
        ("Time 12:30:45, ratio 3:2.", None),
    ],
)
def test_pii_masking(text, expected):
    masked, counts = PiiMasker().mask(text)
    assert masked == (expected if expected is not None else text)
    assert sum(counts.values()) == masked.count("<")


def test_pii_step_counts_and_switches():
    doc = Document("1", "write a@b.org or c@d.net", {})
    out = PiiMasker().apply(doc)
    assert out.text == "write <EMAIL> or <EMAIL>" and out.meta["pii_masked"] == 2
    assert PiiMasker(PiiConfig(mask_emails=False)).apply(doc) is doc
