"""A deterministic synthetic web corpus with ground truth, for testing and demonstrating the pipeline:
good English prose, spam and boilerplate pages, French/German/Spanish/Chinese pages, planted exact and
near duplicates (their true word-5-gram Jaccard recorded), PII, blocklisted URLs and a few broken lines.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from lmforge.data.labelled_samples import quality_samples, toxicity_samples
from lmforge.data.manifest import ensure_writable_dir
from lmforge.data.minhash import TOKEN_RE
from lmforge.data.sample_text import EN, LANGUAGES, prose
from lmforge.data.validate import in_range
from lmforge.data.writers import JsonlWriter

GOOD_DOMAINS = ("news.example.org", "blog.example.net", "wiki.example.com", "travel.example.org")
SPAM_DOMAINS = ("spam.example", "casino-bonus.example")
BOILERPLATE_KINDS = ("keyword_stuffing", "link_farm", "lorem_ipsum", "cookie_wall", "hashtags", "code")
SAMPLE_PIPELINE = """# Example pipeline over the sample corpus: lmforge data run pipeline.toml
[input]
paths = ["corpus"]

[output]
dir = "clean"
keep_removed = true

[[steps]]
type = "url_filter"

[[steps]]
type = "normalize"

[[steps]]
type = "langid"
allowed = ["en"]

[[steps]]
type = "gopher_quality"

[[steps]]
type = "gopher_repetition"

[[steps]]
type = "c4"

[[steps]]
type = "fineweb"

[[steps]]
type = "pii"

[[steps]]
type = "exact_dedup"

[[steps]]
type = "minhash_dedup"
"""


@dataclass(frozen=True)
class SampleConfig:
    """How many documents of each kind; `seed` makes the corpus reproducible byte for byte."""

    seed: int = 0
    good: int = 300
    per_language: int = 15
    spam: int = 60
    seo: int = 0  # promotional pages that pass every rule filter ("spam:seo"), for the quality classifier
    blocked_urls: int = 10
    exact_duplicates: int = 30
    near_duplicates: int = 40
    pii: int = 30
    shards: int = 2
    min_jaccard: float = 0.8
    max_jaccard: float = 0.97

    def __post_init__(self) -> None:
        for name in ("good", "per_language", "spam", "seo", "blocked_urls", "exact_duplicates", "near_duplicates",
                     "pii"):
            in_range(name, getattr(self, name), 0)
        in_range("good", self.good, 1)
        in_range("shards", self.shards, 1, 64)
        in_range("min_jaccard", self.min_jaccard, 0.0, 1.0)
        in_range("max_jaccard", self.max_jaccard, self.min_jaccard, 1.0)


def shingle_set(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """Word n-gram set with the same tokenisation as the MinHash step."""
    words = TOKEN_RE.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def _near_duplicate(text: str, rng: random.Random, lo: float, hi: float) -> tuple[str, float]:
    """Replace a few words so the 5-gram Jaccard lands in [lo, hi]."""
    words = text.split(" ")
    target = rng.uniform(lo, hi)
    shingles = len(words) - 4
    edits = max(1, round(shingles * (1 - target) / (5 * (1 + target))))
    for _ in range(20):
        new = list(words)
        for pos in rng.sample(range(len(words)), edits):
            new[pos] = rng.choice(EN["noun"] + EN["adj"])
        candidate = " ".join(new)
        score = jaccard(text, candidate)
        if lo <= score <= hi:
            return candidate, score
        edits = max(1, edits + (1 if score > hi else -1))
    raise RuntimeError("could not plant a near-duplicate in the Jaccard range")  # not reachable in practice


def _boilerplate(kind: str, rng: random.Random) -> str:
    if kind == "keyword_stuffing":
        offer = rng.choice(["cheap pills", "best loans", "free followers", "hot deals"])
        return "\n".join(f"Buy {offer} now! Best {offer} online, {offer} today." for _ in range(rng.randint(12, 30)))
    if kind == "link_farm":
        items = ["Home", "About us", "Contact", "Blog", "Shop", "Login", "Register", "FAQ", "Careers", "Press"]
        return "\n".join(rng.sample(items, len(items)) * rng.randint(2, 4))
    if kind == "lorem_ipsum":
        return ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
                "labore et dolore magna aliqua. ") * rng.randint(3, 8)
    if kind == "cookie_wall":
        return ("This website uses cookies to improve your experience.\nPlease enable JavaScript to continue.\n"
                "Accept all\nManage preferences\nRead our privacy policy and terms of use.\n"
                + prose("en", rng, 1, 2))
    if kind == "hashtags":
        tags = [f"#{rng.choice(EN['noun'])}" for _ in range(60)]
        return " ".join(tags) + "\n" + " ".join(f"#{t[1:]}love" for t in tags[:30])
    return "function init() {\n  var x = document.getElementById('main');\n  x.style.color = 'red';\n}\n" * 4


SEO_PRODUCTS = ("watches", "sneakers", "phone cases", "vitamins", "garden tools", "headphones", "sunglasses",
                "coffee machines", "yoga mats", "car parts")
SEO_SENTENCES = (
    "Looking for the best {p} deals in {c}?", "Our {a} online store offers {p} at the lowest prices.",
    "Order your {p} today and get free shipping on every order.",
    "Thousands of happy customers trust our {p} experts for quality and service.",
    "Visit our shop now and save up to {n} percent on {p} and {q}.",
    "We stock more {p} than any other store in {c}.", "Compare our {p} with the rest and you will see the difference.",
    "Sign up for our newsletter to hear about new {q} first.", "Our {a} {p} come with a money back guarantee.",
    "Call our friendly team to find the right {p} for you.", "Buy two {p} and get a third one for free this week.",
)
SEO_ADJ = ("trusted", "award winning", "family run", "leading", "friendly", "affordable")
SEO_CITIES = ("London", "Leeds", "Bristol", "Dublin", "Glasgow", "Cardiff", "York")


def _seo_page(rng: random.Random) -> str:
    """Promotional prose that every rule filter keeps (full sentences, stop words, little repetition): the kind
    of page a model-based quality classifier is for."""
    p, q = rng.sample(SEO_PRODUCTS, 2)
    lines = rng.sample(SEO_SENTENCES, rng.randint(7, 10))
    return " ".join(t.format(p=p, q=q, a=rng.choice(SEO_ADJ), c=rng.choice(SEO_CITIES), n=rng.randint(10, 70))
                    for t in lines)


def _pii_sentence(rng: random.Random) -> tuple[str, list[str]]:
    name = rng.choice(["maria.lopez", "j.smith", "chen.wei", "anna_k", "paul.martin"])
    email = f"{name}{rng.randint(1, 99)}@{rng.choice(['example.org', 'mail.example.com'])}"
    phone = f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}"
    ip = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    sentence = (f"Readers can write to {email} or call {phone} for details, and the archive server at {ip} "
                f"keeps the older issues.")
    return sentence, [email, phone, ip]


def generate(config: SampleConfig) -> tuple[list[dict], list[dict]]:
    """(records, ground truth), records in their final shuffled order."""
    rng = random.Random(config.seed)
    docs: list[dict] = []
    truth: list[dict] = []

    def add(text: str, kind: str, lang: str, expect: str, url: str, **extra) -> dict:
        doc_id = f"doc-{len(docs):05d}"
        docs.append({"id": doc_id, "url": url, "text": text})
        truth.append({"id": doc_id, "kind": kind, "lang": lang, "expect": expect, "exact_dup_of": None,
                      "near_dup_of": None, "jaccard": None, "pii": [], **extra})
        return docs[-1]

    def url(domain_list: tuple[str, ...]) -> str:
        return f"https://{rng.choice(domain_list)}/{rng.choice(EN['noun'])}-{rng.randint(1, 10**6)}"

    good_ids = []
    for i in range(config.good):
        text = prose("en", rng, rng.randint(3, 5), rng.randint(4, 7))
        pii: list[str] = []
        if i < config.pii:
            sentence, pii = _pii_sentence(rng)
            text = f"{text} {sentence}"
        add(text, "good", "en", "keep", url(GOOD_DOMAINS), pii=pii)
        good_ids.append(len(docs) - 1)
    for lang in LANGUAGES[1:]:
        for _ in range(config.per_language):
            add(prose(lang, rng, rng.randint(2, 4), rng.randint(4, 6)), "foreign", lang, "drop", url(GOOD_DOMAINS))
    for i in range(config.spam):
        kind = BOILERPLATE_KINDS[i % len(BOILERPLATE_KINDS)]
        add(_boilerplate(kind, rng), f"spam:{kind}", "en", "drop", url(GOOD_DOMAINS))
    for _ in range(config.seo):
        add(_seo_page(rng), "spam:seo", "en", "drop", url(GOOD_DOMAINS))
    for _ in range(config.blocked_urls):
        add(prose("en", rng, 3, 5), "blocked_url", "en", "drop", url(SPAM_DOMAINS))
    sources = rng.sample(good_ids, min(len(good_ids), config.exact_duplicates + config.near_duplicates))
    for k, src in enumerate(sources):
        original = docs[src]["text"]
        if k < config.exact_duplicates:
            variant = [original, original.replace(". ", ".  "), original + "\n"][k % 3]
            add(variant, "exact_duplicate", "en", "drop", url(GOOD_DOMAINS), exact_dup_of=docs[src]["id"],
                pii=truth[src]["pii"])
        else:
            text, score = _near_duplicate(original, rng, config.min_jaccard, config.max_jaccard)
            add(text, "near_duplicate", "en", "drop", url(GOOD_DOMAINS), near_dup_of=docs[src]["id"],
                jaccard=round(score, 4), pii=truth[src]["pii"])
    # Originals come first so "keep the first of a cluster" keeps them; the rest is shuffled.
    order = list(range(len(docs)))
    originals = set(good_ids)
    head = [i for i in order if i in originals]
    tail = [i for i in order if i not in originals]
    rng.shuffle(head)
    rng.shuffle(tail)
    order = head + tail
    return [docs[i] for i in order], [truth[i] for i in order]


def write_sample(out_dir: str | Path, config: SampleConfig | None = None) -> dict:
    """Write corpus shards (plain JSONL, then zstd), ground_truth.jsonl, summary.json, pipeline.toml, and the
    labelled sets of the model-based steps (quality_labels.jsonl, toxicity_labels.jsonl and
    toxicity_heldout.jsonl)."""
    config = config or SampleConfig()
    out = Path(out_dir)
    ensure_writable_dir(out)
    docs, truth = generate(config)
    per_shard = -(-len(docs) // config.shards)
    bad_lines = [b'{"id": "broken", "text": "unterminated', b"\xff\xfe\xfa not utf-8 at all", b"[1, 2, 3]"]
    for s in range(config.shards):
        suffix = ".jsonl" if s % 2 == 0 else ".jsonl.zst"
        with JsonlWriter(out / "corpus" / f"part-{s:05d}{suffix}", "none" if s % 2 == 0 else "zstd") as w:
            for record in docs[s * per_shard : (s + 1) * per_shard]:
                w.write(record)
    with open(out / "corpus" / "part-00000.jsonl", "ab") as fh:  # broken input the readers must survive
        fh.write(b"\n".join(bad_lines) + b"\n")
    with JsonlWriter(out / "ground_truth.jsonl") as w:
        for record in truth:
            w.write(record)
    for name, rows in (("quality_labels.jsonl", quality_samples(docs, truth)),
                       ("toxicity_labels.jsonl", toxicity_samples(seed=config.seed)),
                       ("toxicity_heldout.jsonl", toxicity_samples(200, seed=config.seed, heldout=True))):
        with JsonlWriter(out / name) as w:
            for row in rows:
                w.write(row)
    summary = {
        "config": asdict(config),
        "documents": len(docs),
        "kinds": {k: sum(t["kind"] == k for t in truth) for k in sorted({t["kind"] for t in truth})},
        "expect_keep": sum(t["expect"] == "keep" for t in truth),
        "bad_lines": {"malformed_json": 1, "undecodable": 1, "missing_text": 1},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "pipeline.toml").write_text(SAMPLE_PIPELINE)
    return summary
