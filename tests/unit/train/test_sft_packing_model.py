"""Packed forward with segment ids: several documents in one row give exactly each document's own forward (the
reference: the same model run on each document alone), and the summed loss of the packed row equals the sum of
the separate losses."""

import pytest
import torch

from lmforge.common.errors import LmforgeError
from lmforge.generation.cache import new_kv_cache
from lmforge.model import Transformer, get_preset
from lmforge.model.segments import segment_positions
from lmforge.train.step import token_loss_sum


def _pack(lengths, vocab, pad_to, gen):
    docs = [torch.randint(0, vocab, (n,), generator=gen) for n in lengths]
    ids = torch.cat(docs + [torch.zeros(pad_to - sum(lengths), dtype=torch.long)])
    seg = torch.cat([torch.full((n,), i + 1) for i, n in enumerate(lengths)]
                    + [torch.zeros(pad_to - sum(lengths), dtype=torch.long)])
    return docs, ids[None], seg[None]


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-mistral", "tiny-qwen3", "tiny-gemma3", "tiny-bert", "tiny-moe",
                                    "tiny-deepseek-v3"])
def test_packed_logits_equal_separate_forwards(preset):
    torch.manual_seed(0)
    model = Transformer(get_preset(preset, max_seq_len=64)).eval()
    gen = torch.Generator().manual_seed(1)
    # 20 > tiny-mistral's window of 16: the window applies inside a segment too; tiny-bert (bidirectional, learned
    # absolute positions) checks the positions restart at each segment
    lengths = [7, 20, 1, 13]
    docs, ids, seg = _pack(lengths, model.config.vocab_size, 48, gen)
    with torch.no_grad():
        packed = model(ids, segment_ids=seg)[0]
        start = 0
        for doc in docs:
            alone = model(doc[None])[0]
            diff = (packed[start:start + len(doc)] - alone).abs().max().item()
            assert diff <= 1e-5, f"{preset}: packed vs separate logits differ by {diff}"
            start += len(doc)


def test_packed_loss_is_the_sum_of_separate_losses():
    torch.manual_seed(0)
    model = Transformer(get_preset("tiny-llama")).eval()
    gen = torch.Generator().manual_seed(2)
    docs, ids, seg = _pack([9, 15, 6], model.config.vocab_size, 32, gen)
    # next-token targets inside each document only (the last token of a document predicts nothing)
    labels = torch.full_like(ids, -100)
    start = 0
    for doc in docs:
        labels[0, start:start + len(doc) - 1] = doc[1:]
        start += len(doc)
    with torch.no_grad():
        packed = float(token_loss_sum(model(ids, segment_ids=seg), labels))
        separate = sum(float(token_loss_sum(model(d[None, :-1]), d[None, 1:])) for d in docs)
    assert packed == pytest.approx(separate, rel=1e-5)


def test_segment_positions_restart_at_each_segment():
    seg = torch.tensor([[1, 1, 1, 2, 2, 3, 0, 0]])
    assert segment_positions(seg).tolist() == [[0, 1, 2, 0, 1, 0, 0, 1]]


def test_segment_ids_refuse_a_kv_cache_and_a_padding_mask():
    model = Transformer(get_preset("tiny-llama")).eval()
    ids = torch.zeros(1, 4, dtype=torch.long)
    seg = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(LmforgeError, match="KV cache"):
        model(ids, segment_ids=seg, kv_cache=new_kv_cache(model, 1, 8))
    with pytest.raises(LmforgeError, match="attention_mask"):
        model(ids, segment_ids=seg, attention_mask=torch.ones(1, 4))
    with pytest.raises(LmforgeError, match="shape"):
        model(ids, segment_ids=seg[:, :3])
