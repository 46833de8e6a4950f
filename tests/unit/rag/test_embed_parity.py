"""Sentence embeddings of all-MiniLM-L6-v2 from `lmforge embed` equal sentence-transformers' `encode` (the
reference) within 1e-5 on 50 sentences (English, Chinese, emoji, a text past the 256-token window), batched and one
at a time; and the pooling modes match their definitions."""

import numpy as np
import pytest
import torch

from lmforge.rag.embedder import pool
from tests.cli_util import assert_user_error, run_cli
from tests.unit.rag.conftest import minilm_path

SENTENCES = [
    "The cat sits on the mat.", "A quick brown fox jumps over the lazy dog.", "Paris is the capital of France.",
    "I love machine learning!", "What time is it?", "Retrieval-augmented generation grounds answers in documents.",
    "The stock market fell sharply today.", "She plays the violin every evening.", "Water boils at 100 °C.",
    "Photosynthesis converts light into chemical energy.", "Can you recommend a good book?", "Hello, world.",
    "The meeting has been moved to Thursday.", "Rust and Python are both popular languages.", "It is raining.",
    "我喜欢吃苹果。", "今天天气很好，我们去公园散步吧。", "北京是中国的首都。", "机器学习是人工智能的一个分支。",
    "这本书非常有意思。", "你好，世界！", "检索增强生成：实时调用外部知识库。", "他每天早上跑步五公里。",
    "I'm so happy today 😀🎉", "🚀 Launch day!", "Pizza 🍕 or sushi 🍣?", "❤️ love it", "👍",
    "Good morning ☀️ everyone", "The weather is 🌧️ again", "Let's go 🏃‍♀️💨",
    "Mixed 中文 and English with emoji 🤖.", "A sentence with numbers: 3.14159, 2.71828 and 42.",
    "UPPER CASE TEXT SHOULD BE LOWERED.", "tabs\tand\nnewlines", "   leading and trailing spaces   ",
    "Ünïcödé àccents are stripped or kept?", "Ελληνικά κείμενα επίσης.", "Русский текст тоже.",
    "日本語の文章もあります。", "한국어 문장입니다.", "x", "??!!", "a b c d e f g",
    "The committee approved the budget after a long debate about infrastructure spending.",
    "Deep networks learn hierarchical features.", "Tokenizers split words into word pieces.",
    "Sentence embeddings enable semantic search, clustering and classification.",
    "Long text: " + " ".join(f"word{i} is followed by more words" for i in range(120)),
    "The end.",
]


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_path()), device="cpu")
    batched = model.encode(SENTENCES, batch_size=16, convert_to_numpy=True)
    single = np.stack([model.encode([s], batch_size=1, convert_to_numpy=True)[0] for s in SENTENCES])
    return batched, single


def check_close(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape == (50, 384)
    assert np.abs(ours - ref).max() < 1e-5, np.abs(ours - ref).max()
    cosine = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cosine.min() >= 0.99999


def test_lmforge_embed_cli_equals_sentence_transformers_batched(tmp_path, reference):
    texts = tmp_path / "texts.jsonl"
    import json

    texts.write_text("".join(json.dumps({"text": s}, ensure_ascii=False) + "\n" for s in SENTENCES))
    result = run_cli("embed", "all-minilm-l6-v2", "--input", str(texts), "--out", str(tmp_path / "e.npy"),
                     "--batch-size", "16", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "384-d" in result.stderr and "pooling mean" in result.stderr
    check_close(np.load(tmp_path / "e.npy"), reference[0])


def test_embedder_one_at_a_time_equals_reference(minilm, reference):
    check_close(minilm.embed(SENTENCES, batch_size=1).numpy(), reference[1])
    assert minilm.pooling == "mean" and minilm.normalize and minilm.max_length == 256


def test_embedder_runs_on_the_inference_path(minilm):
    """load_embedder prepares its model for inference (fused q/k/v, lmforge's CPU linears where the kernels build):
    the unprepared model embedded the benchmark's chunks about half as fast (docs/rag.md); the vectors are those of
    the parity tests above."""
    from lmforge.kernels.cpu_kernels import cpu_ops
    from lmforge.model.attention import Attention

    attentions = [m for m in minilm.model.modules() if isinstance(m, Attention)]
    assert len(attentions) == 6 and all(a.qkv_proj is not None for a in attentions)
    if cpu_ops() is not None:
        assert not any(type(m) is torch.nn.Linear for m in minilm.model.modules()), "a linear left on F.linear"


def test_embed_cli_mistakes_are_one_line_errors(tmp_path):
    assert_user_error(run_cli("embed", "all-minilm-l6-v2", "hi", "--pooling", "median"), "median", "mean")
    assert_user_error(run_cli("embed", "all-minilm-l6-v2"), "nothing to embed")
    assert_user_error(run_cli("embed", str(tmp_path / "nope"), "hi"), "no such file")


def test_pooling_modes_follow_their_definitions():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
    assert torch.equal(pool(hidden, mask, "last"), torch.stack([hidden[0, 2], hidden[1, 1]]))
    assert torch.allclose(pool(hidden, mask, "mean"), torch.stack([hidden[0, :3].mean(0), hidden[1, :2].mean(0)]))
    assert torch.equal(pool(hidden, mask, "max"), torch.stack([hidden[0, 2], hidden[1, 1]]))
    assert torch.allclose(pool(hidden, mask, "mean_sqrt_len"),
                          torch.stack([hidden[0, :3].sum(0) / 3 ** 0.5, hidden[1, :2].sum(0) / 2 ** 0.5]))
