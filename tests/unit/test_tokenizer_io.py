"""Saving and loading Hugging Face tokenizer directories, checked against transformers.AutoTokenizer; add_tokens."""

import json
import random

import pytest
import transformers  # the reference for the HF directory format
from tokenizers import Tokenizer as Backend
from tokenizers import models, pre_tokenizers

from lmforge.common.errors import LmforgeError
from lmforge.tokenizer import CHATML_TEMPLATE, TOKENIZER_TYPES, Tokenizer, train_tokenizer


def make_corpus(n: int = 300, seed: int = 99) -> list[str]:
    rng = random.Random(seed)
    words = [
        "the",
        "a",
        "cat",
        "dog",
        "house",
        "river",
        "runs",
        "jumps",
        "quickly",
        "slowly",
        "over",
        "under",
        "and",
        "but",
        "42",
        "1999",
        "hello",
        "world",
    ]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + rng.choice(".!?") for _ in range(n)]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="module")
def trained(corpus):
    sizes = {"bpe": 250, "byte-bpe": 400, "wordpiece": 250, "unigram": 250}
    return {kind: train_tokenizer(corpus, type=kind, vocab_size=sizes[kind]) for kind in TOKENIZER_TYPES}


SAMPLES = [
    "the cat runs quickly over the house.",
    "Hello world, 1999 and 42!",
    "  spaced   out\ttext\nwith lines  ",
    "special <|im_start|>user\nhi<|im_end|> and <s>x</s> and [CLS] y [SEP] <unk>",
    "unicode café 猫 🐱",
    "",
]


@pytest.mark.parametrize("kind", TOKENIZER_TYPES)
def test_saved_dir_encodes_identically_in_transformers_and_on_reload(tmp_path, trained, kind):
    ours = trained[kind]
    ours.save(tmp_path)
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in tmp_path.iterdir()}
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    reloaded = Tokenizer.from_dir(tmp_path)
    assert len(theirs) == ours.vocab_size == reloaded.vocab_size
    for text in SAMPLES:
        for special in (True, False):
            ids = ours.encode(text, add_special_tokens=special)
            assert theirs.encode(text, add_special_tokens=special) == ids, (kind, text)
            assert reloaded.encode(text, add_special_tokens=special) == ids
        for skip in (True, False):
            assert theirs.decode(ids, skip_special_tokens=skip) == ours.decode(ids, skip_special_tokens=skip)
    for role in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(theirs, role) == getattr(ours, role) == getattr(reloaded, role)
        assert getattr(theirs, f"{role}_id") == getattr(ours, f"{role}_id")
    assert reloaded.chat_template == ours.chat_template
    assert theirs.chat_template == ours.chat_template


def test_chat_template_is_saved_in_jinja_file_and_config(tmp_path, trained):
    ours = trained["byte-bpe"]
    ours.save(tmp_path)
    assert (tmp_path / "chat_template.jinja").read_text(encoding="utf-8") == CHATML_TEMPLATE
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["chat_template"] == CHATML_TEMPLATE
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    for prompt in (True, False):
        text = ours.apply_chat_template(chat, add_generation_prompt=prompt)
        assert text == theirs.apply_chat_template(chat, add_generation_prompt=prompt, tokenize=False)
        ids = ours.apply_chat_template(chat, add_generation_prompt=prompt, tokenize=True)
        assert ids == theirs.apply_chat_template(chat, add_generation_prompt=prompt, tokenize=True, return_dict=False)


def test_bos_eos_flags_wrap_encodings_and_survive_saving(tmp_path, trained):
    base = trained["bpe"]
    tok = Tokenizer(
        Backend.from_str(base.backend.to_str()),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        add_bos_token=True,
        add_eos_token=True,
    )
    plain = base.encode("the cat", add_special_tokens=False)
    assert tok.encode("the cat") == [tok.bos_token_id, *plain, tok.eos_token_id]
    assert tok.encode("the cat", add_special_tokens=False) == plain
    assert tok.encode_batch(["the cat", "dog"])[0] == tok.encode("the cat")
    tok.save(tmp_path)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    reloaded = Tokenizer.from_dir(tmp_path)
    assert reloaded.add_bos_token and reloaded.add_eos_token
    for text in SAMPLES:
        assert theirs.encode(text) == tok.encode(text) == reloaded.encode(text)


def test_transformers_saved_directory_loads(tmp_path, trained):
    backend = Backend.from_str(trained["byte-bpe"].backend.to_str())
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    hf.chat_template = (
        "{% for m in messages %}{{ bos_token + m['role'] + ': ' + m['content'] + eos_token }}{% endfor %}"
    )
    hf.save_pretrained(str(tmp_path))
    ours = Tokenizer.from_dir(tmp_path)
    assert (ours.bos_token, ours.eos_token, ours.pad_token, ours.unk_token) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        None,
    )
    assert ours.chat_template == hf.chat_template
    chat = [{"role": "user", "content": "hello world"}]
    assert ours.apply_chat_template(chat) == hf.apply_chat_template(chat, tokenize=False)
    for text in SAMPLES:
        assert ours.encode(text) == hf.encode(text)


def write_dir(path, backend, config=None, special_map=None, jinja=None):
    path.mkdir(parents=True, exist_ok=True)
    backend.save(str(path / "tokenizer.json"))
    if config is not None:
        (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    if special_map is not None:
        (path / "special_tokens_map.json").write_text(json.dumps(special_map), encoding="utf-8")
    if jinja is not None:
        (path / "chat_template.jinja").write_text(jinja, encoding="utf-8")


def test_from_dir_reads_real_hf_layouts(tmp_path, trained):
    backend = trained["bpe"].backend
    # Tokens as AddedToken dicts, a list of named templates, flags for BOS.
    write_dir(
        tmp_path / "a",
        backend,
        config={
            "bos_token": {"content": "<s>", "lstrip": False, "normalized": False, "__type": "AddedToken"},
            "eos_token": "</s>",
            "unk_token": {"content": "<unk>"},
            "chat_template": [{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": "DEFAULT"}],
            "add_bos_token": True,
            "model_max_length": 2048,
        },
    )
    a = Tokenizer.from_dir(tmp_path / "a")
    assert (a.bos_token, a.eos_token, a.unk_token, a.pad_token) == ("<s>", "</s>", "<unk>", None)
    assert a.chat_template == "DEFAULT" and a.add_bos_token and not a.add_eos_token
    assert a.model_max_length == 2048
    assert a.encode("the cat")[0] == a.bos_token_id
    # Legacy special_tokens_map.json; chat_template.jinja wins over the config's template.
    write_dir(
        tmp_path / "b",
        backend,
        config={"chat_template": "FROM CONFIG"},
        special_map={"eos_token": {"content": "</s>", "single_word": False}, "pad_token": "<pad>"},
        jinja="FROM FILE",
    )
    b = Tokenizer.from_dir(tmp_path / "b")
    assert (b.eos_token, b.pad_token, b.chat_template) == ("</s>", "<pad>", "FROM FILE")
    # tokenizer.json alone is enough.
    write_dir(tmp_path / "c", backend)
    c = Tokenizer.from_dir(tmp_path / "c")
    assert c.special_tokens_map == {} and c.chat_template is None
    assert c.encode("the cat") == trained["bpe"].encode("the cat")
    assert Tokenizer.from_file(tmp_path / "c" / "tokenizer.json", eos_token="</s>").eos_token_id == 2


def test_loading_errors_name_the_path(tmp_path, trained):
    with pytest.raises(LmforgeError, match="not found: .*missing_dir"):
        Tokenizer.from_dir(tmp_path / "missing_dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmforgeError, match="no tokenizer.json in .*empty"):
        Tokenizer.from_dir(tmp_path / "empty")
    with pytest.raises(LmforgeError, match="not found: .*nothing.json"):
        Tokenizer.from_file(tmp_path / "nothing.json")
    write_dir(tmp_path / "bad", trained["bpe"].backend)
    (tmp_path / "bad" / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(LmforgeError, match="tokenizer_config.json is not valid JSON"):
        Tokenizer.from_dir(tmp_path / "bad")
    (tmp_path / "bad" / "tokenizer_config.json").write_text('{"eos_token": 5}', encoding="utf-8")
    with pytest.raises(LmforgeError, match="eos_token must be a string"):
        Tokenizer.from_dir(tmp_path / "bad")
    (tmp_path / "bad" / "tokenizer.json").write_text("[]", encoding="utf-8")
    with pytest.raises(LmforgeError, match="cannot read .*tokenizer.json"):
        Tokenizer.from_dir(tmp_path / "bad")


def test_add_tokens_expands_the_vocabulary(tmp_path, trained):
    tok = Tokenizer.from_dir(_saved(tmp_path / "orig", trained["byte-bpe"]))
    before = tok.vocab_size
    existing = tok.id_to_token(300)
    assert tok.add_tokens(["<think>", "</think>", "<think>", existing]) == 2
    assert tok.vocab_size == before + 2
    assert tok.add_tokens(["<think>"]) == 0
    assert tok.add_tokens(["<|tool|>"], special=True) == 1
    assert tok.vocab_size == before + 3
    think, end, tool = (tok.token_to_id(t) for t in ("<think>", "</think>", "<|tool|>"))
    assert {think, end, tool} == {before, before + 1, before + 2}
    ids = tok.encode("a<think>plan</think>b<|tool|>")
    assert think in ids and end in ids and tool in ids
    assert tok.encode("<think>") == [think]
    assert tok.decode(ids) == "a<think>plan</think>b<|tool|>"
    assert tok.decode(ids, skip_special_tokens=True) == "a<think>plan</think>b"
    theirs = transformers.AutoTokenizer.from_pretrained(str(_saved(tmp_path / "grown", tok)))
    assert len(theirs) == tok.vocab_size
    assert theirs.encode("a<think>plan</think>b<|tool|>") == ids
    with pytest.raises(LmforgeError, match="list of non-empty strings"):
        tok.add_tokens("<think>")


def test_tokenizer_validates_its_arguments(trained):
    backend = trained["bpe"].backend
    with pytest.raises(LmforgeError, match="backend must be a tokenizers.Tokenizer"):
        Tokenizer("tokenizer.json")
    with pytest.raises(LmforgeError, match="add_bos_token=True needs a bos_token"):
        Tokenizer(backend, add_bos_token=True)
    with pytest.raises(LmforgeError, match="eos_token must be a non-empty string"):
        Tokenizer(backend, eos_token="")
    tok = trained["bpe"]
    with pytest.raises(LmforgeError, match=r"must be in \[0, 2\*\*32\), got \[-3\]"):
        tok.decode([0, -3])
    with pytest.raises(LmforgeError, match="sequence of integer ids"):
        tok.decode(["the"])
    ids = tok.encode("the cat")
    assert tok.decode([*ids, tok.vocab_size + 5]) == "the cat"  # a padded embedding row decodes to nothing
    assert tok.encode_batch(iter(["the cat", "dog"])) == [ids, tok.encode("dog")]
    with pytest.raises(LmforgeError, match="encode expects a string"):
        tok.encode(["the cat"])
    assert tok.decode(tuple(tok.encode("the cat"))) == tok.decode(tok.encode("the cat")) == "the cat"
    assert tok.id_to_token(-1) is None and tok.id_to_token(10**6) is None and tok.id_to_token(10**20) is None
    assert tok.token_to_id("no-such-token-anywhere") is None


def test_missing_named_special_token_is_added_like_transformers(tmp_path):
    backend = Backend(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = Tokenizer(backend, pad_token="<pad>", unk_token="[UNK]")
    assert tok.vocab_size == 4 and tok.pad_token_id == 3
    assert tok.encode("hello <pad> world") == [0, 3, 1]
    theirs = transformers.AutoTokenizer.from_pretrained(str(_saved(tmp_path, tok)))
    assert theirs.pad_token_id == 3 and theirs.encode("hello <pad> world") == [0, 3, 1]


def _saved(path, tok):
    tok.save(path)
    return path
