"""Token-aware chunking with overlap (as LlamaIndex's SentenceSplitter / LangChain's TokenTextSplitter).

A document is cut into windows of at most `size` tokens of the embedder's tokenizer, each starting `size - overlap`
tokens after the previous one; a window's end is pulled back to the last sentence or line break inside it when
there is one in its second half, so chunks end on whole sentences. Chunks keep character offsets into the text.
"""

import re
from dataclasses import dataclass

from lmforge.common.errors import LmforgeError

_BREAK = re.compile(r"(?<=[.!?。！？])\s+|\n\s*\n|\n")


@dataclass(frozen=True)
class ChunkSpec:
    size: int = 128  # tokens per chunk (all-MiniLM-L6-v2 reads 256 word pieces)
    overlap: int = 16  # tokens shared by consecutive chunks

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size < 8:
            raise LmforgeError(f"chunk size={self.size!r} must be an integer >= 8 tokens")
        if not isinstance(self.overlap, int) or not 0 <= self.overlap < self.size // 2:
            raise LmforgeError(f"chunk overlap={self.overlap!r} must be an integer in [0, size/2)")


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # character offsets into the document's text
    end: int


def chunk_text(text: str, offsets: list[tuple[int, int]], spec: ChunkSpec) -> list[Chunk]:
    """Chunks of `text` given its tokens' character `offsets` (from the embedder's tokenizer, no special tokens)."""
    if not offsets:
        return [Chunk(text.strip(), 0, len(text))] if text.strip() else []
    breaks = [m.end() for m in _BREAK.finditer(text)]
    chunks, first = [], 0
    while first < len(offsets):
        last = min(first + spec.size, len(offsets)) - 1
        start, end = offsets[first][0], offsets[last][1]
        if last < len(offsets) - 1:  # not the end of the text: prefer to stop at a sentence break
            inside = [b for b in breaks if offsets[first + spec.size // 2][0] <= b <= end]
            if inside:
                end = inside[-1]
                last = max(i for i in range(first, last + 1) if offsets[i][0] < end)
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            lead = len(piece) - len(piece.lstrip())
            chunks.append(Chunk(stripped, start + lead, start + lead + len(stripped)))
        if last >= len(offsets) - 1:
            break
        first = max(last + 1 - spec.overlap, first + 1)
    return chunks
