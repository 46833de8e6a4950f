"""HTML to text extraction with Resiliparse (Bevendorff et al. 2018, "Elastic ChatNoir"), the extractor
used for the DCLM-Baseline corpus (Li et al. 2024, "DataComp-LM"); main-content mode drops menus and footers.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.data.document import Document, Drop


@dataclass(frozen=True)
class HtmlExtractConfig:
    """source_field: record field holding the HTML ('' means the document text itself is HTML).
    main_content: keep only the main content (drops navigation, footers, sidebars).
    list_bullets: prefix list items with a bullet. alt_texts / links: keep image alt texts / link targets.
    """

    source_field: str = ""
    main_content: bool = True
    list_bullets: bool = True
    alt_texts: bool = False
    links: bool = False


class HtmlExtractor:
    """`extract(html)` returns plain text; `apply(doc)` replaces the text (or drops an empty result)."""

    name = "html_extract"

    def __init__(self, config: HtmlExtractConfig | None = None) -> None:
        from resiliparse.extract.html2text import extract_plain_text

        self.config = config or HtmlExtractConfig()
        self._extract = extract_plain_text

    def extract(self, html: str) -> str:
        cfg = self.config
        return self._extract(
            html,
            main_content=cfg.main_content,
            list_bullets=cfg.list_bullets,
            alt_texts=cfg.alt_texts,
            links=cfg.links,
        )

    def apply(self, doc: Document) -> Document | Drop:
        source = doc.meta.get(self.config.source_field) if self.config.source_field else doc.text
        if not isinstance(source, str):
            return Drop(f"{self.name}:missing_html")
        text = self.extract(source).strip()
        if not text:
            return Drop(f"{self.name}:empty")
        meta = {k: v for k, v in doc.meta.items() if k != self.config.source_field}
        return Document(doc.id, text, meta)
