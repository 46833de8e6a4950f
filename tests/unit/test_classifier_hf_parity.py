"""Classification heads (issue 30, item 4) against transformers, random weights: a `BertForSequenceClassification`,
`BertForTokenClassification`, `LlamaForSequenceClassification` (last real token, left and right padding) and
`LlamaForTokenClassification` directory loads into lmforge's Classifier with equal logits (<= 1e-4), and the
directory lmforge writes loads back into the same transformers class with the same logits."""

import pytest
import torch

from lmforge.formats.hf_classifier import is_classifier_dir, load_classifier, save_classifier

TOL = 1e-4
LABELS = {"0": "negative", "1": "neutral", "2": "positive"}
TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64, id2label=LABELS, label2id={v: int(k) for k, v in LABELS.items()})


def _perturb(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # biases and norms off their constant init
    return model.eval()


def reference(kind: str, **overrides):
    import transformers as tf

    if kind.startswith("bert"):
        config = tf.BertConfig(**{**TINY, **overrides})
    else:
        config = tf.LlamaConfig(**{**TINY, "num_key_value_heads": 2, "pad_token_id": 0, **overrides},
                                tie_word_embeddings=False)
    cls = {"bert-seq": tf.BertForSequenceClassification, "bert-tok": tf.BertForTokenClassification,
           "llama-seq": tf.LlamaForSequenceClassification, "llama-tok": tf.LlamaForTokenClassification}[kind]
    return _perturb(cls(config))


def _batch(padding: str, T: int = 13):
    """Ids without the pad id (0), a mask with two padded rows, padded on the given side (pad id 0 there)."""
    torch.manual_seed(1)
    ids = torch.randint(1, 256, (3, T))
    mask = torch.ones_like(ids)
    for row, n_pad in ((1, 4), (2, 7)):
        if padding == "right":
            mask[row, T - n_pad:] = 0
        else:
            mask[row, :n_pad] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("kind,padding", [("bert-seq", "right"), ("bert-tok", "right"), ("llama-seq", "right"),
                                          ("llama-seq", "left"), ("llama-tok", "right")])
def test_logits_equal_transformers_and_the_saved_dir_reloads(tmp_path, kind, padding):
    import transformers

    ref = reference(kind)
    ref.save_pretrained(tmp_path / "hf")
    assert is_classifier_dir(tmp_path / "hf")
    ours = load_classifier(tmp_path / "hf")
    assert ours.task == ("sequence" if kind.endswith("seq") else "token")
    assert ours.labels == ("negative", "neutral", "positive")
    ids, mask = _batch(padding)
    types = (torch.arange(ids.shape[1]) >= 6).long().expand_as(ids) if kind.startswith("bert") else None
    extra = {"token_type_ids": types} if types is not None else {}
    with torch.no_grad():
        expected = ref(ids, attention_mask=mask, **extra).logits
        got = ours(ids, attention_mask=mask, **extra)
    assert got.shape == expected.shape
    real = mask.bool() if ours.task == "token" else slice(None)
    assert (got[real] - expected[real]).abs().max() <= TOL
    if kind == "llama-seq":  # transformers pools the last non-pad token; padding must not move the logits
        with torch.no_grad():
            alone = ref(ids[1:2][mask[1:2].bool()][None]).logits
        assert (got[1] - alone[0]).abs().max() <= TOL

    save_classifier(ours, tmp_path / "ours")
    auto = transformers.AutoModelForSequenceClassification if ours.task == "sequence" else \
        transformers.AutoModelForTokenClassification
    back = auto.from_pretrained(tmp_path / "ours", dtype=torch.float32).eval()
    assert type(back) is type(ref) and back.config.id2label == ref.config.id2label
    with torch.no_grad():
        again = back(ids, attention_mask=mask, **extra).logits
    assert (again[real] - expected[real]).abs().max() <= 1e-5


def test_not_a_classifier_is_one_clear_error(tmp_path):
    from lmforge.common.errors import LmforgeError
    from tests.tiny_lm import tiny_lm

    tiny_lm().save(tmp_path / "lm")
    assert not is_classifier_dir(tmp_path / "lm")
    with pytest.raises(LmforgeError, match="not a sequence or token classifier"):
        load_classifier(tmp_path / "lm")
