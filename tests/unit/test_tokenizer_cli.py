"""`lmforge tokenizer train|encode`: file expansion, the saved directory, output formats, user errors."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmforge.cli.tokenizer_cmd import app, expand_inputs
from lmforge.common.errors import LmforgeError
from lmforge.tokenizer import Tokenizer, train_tokenizer

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def write_corpus(folder: Path, seed: int = 5) -> list[Path]:
    rng = random.Random(seed)
    words = [
        "apple",
        "banana",
        "cherry",
        "river",
        "mountain",
        "quickly",
        "slowly",
        "under",
        "over",
        "the",
        "a",
        "and",
        "7",
        "12",
    ]
    (folder / "nested" / ".git").mkdir(parents=True)
    files = [folder / "one.txt", folder / "two.md", folder / "nested" / "three.txt"]
    for path in files:
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + "." for _ in range(150)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "nested" / "weights.bin").write_bytes(bytes(range(256)) * 8)  # binary: skipped
    (folder / "nested" / ".git" / "HEAD").write_text("ref: main\n", encoding="utf-8")  # hidden: skipped
    return files


def test_expand_inputs_handles_files_directories_and_globs(tmp_path):
    one, two, three = write_corpus(tmp_path)
    assert expand_inputs([str(tmp_path)]) == sorted([one, two, three])
    assert expand_inputs([str(tmp_path / "*.txt"), str(one)]) == [one]
    assert set(expand_inputs([str(tmp_path / "**" / "*.txt")])) == {one, three}
    with pytest.raises(LmforgeError, match="no files match the pattern"):
        expand_inputs([str(tmp_path / "*.csv")])
    with pytest.raises(LmforgeError, match="not found: .*absent.txt"):
        expand_inputs([str(tmp_path / "absent.txt")])
    (tmp_path / "binary_only").mkdir()
    (tmp_path / "binary_only" / "x.bin").write_bytes(b"\0\1\2")
    with pytest.raises(LmforgeError, match="holds no text files"):
        expand_inputs([str(tmp_path / "binary_only")])


def test_train_writes_a_loadable_directory(tmp_path):
    files = write_corpus(tmp_path / "data")
    out = tmp_path / "tok"
    args = ["train", "--input", str(files[0]), str(tmp_path / "data" / "nested"), "--input", str(files[1])]
    args += ["--type", "bpe", "--vocab-size", "200", "--out", str(out), "--special-token", "<unk>"]
    args += ["--special-token", "<|sep|>", "--min-frequency", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = [line for line in result.output.splitlines() if line.startswith("trained")]
    assert len(summary) == 1 and "on 3 file(s)" in summary[0] and str(out) in summary[0]
    tok = Tokenizer.from_dir(out)
    assert f"vocab size {tok.vocab_size}" in summary[0]
    assert tok.token_to_id("<unk>") == 0 and tok.token_to_id("<|sep|>") == 1
    # Same result as the library call on the same files.
    direct = train_tokenizer(
        files=[files[0], files[2], files[1]],
        type="bpe",
        vocab_size=200,
        special_tokens=["<unk>", "<|sep|>"],
        min_frequency=3,
    )
    assert tok.get_vocab() == direct.get_vocab()


def test_encode_prints_tokens_and_ids(tmp_path):
    write_corpus(tmp_path / "data")
    out = tmp_path / "tok"
    trained = runner.invoke(app, ["train", str(tmp_path / "data"), "--vocab-size", "400", "--out", str(out)])
    assert trained.exit_code == 0, trained.output
    tok = Tokenizer.from_dir(out)
    text = "apple river <|im_end|>"
    ids = tok.encode(text)

    plain = runner.invoke(app, ["encode", "--tokenizer", str(out), text])
    assert plain.exit_code == 0, plain.output
    assert f"ids:    {ids}" in plain.output and f"count:  {len(ids)}" in plain.output
    assert repr(tok.id_to_token(ids[0])) in plain.output

    ids_only = runner.invoke(app, ["encode", "--tokenizer", str(out), "--ids-only", text])
    assert ids_only.output.split() == [str(i) for i in ids]

    as_json = runner.invoke(app, ["encode", "-t", str(out), "--json", text])
    assert json.loads(as_json.output) == {"ids": ids, "tokens": [tok.id_to_token(i) for i in ids]}

    stdin = runner.invoke(app, ["encode", "-t", str(out), "--ids-only", "-"], input=text)
    assert stdin.output.split() == [str(i) for i in ids]

    both = runner.invoke(app, ["encode", "-t", str(out), "--ids-only", "--json", text])
    assert isinstance(both.exception, LmforgeError) and "not both" in str(both.exception)


@pytest.mark.parametrize("command", [[], ["train"], ["encode"]])
def test_every_command_and_option_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    if not command:
        assert "train" in text and "encode" in text
    options = {
        "train": ["--input", "--type", "--vocab-size", "--out", "--special-token", "--min-frequency", "--pattern"],
        "encode": ["--tokenizer", "--ids-only", "--json", "--special"],
    }
    for option in options.get(command[0] if command else "", []):
        assert option in text
    # Every option line carries a description, not just its name and type.
    for line in result.output.splitlines():
        if line.strip("│ ").startswith("--") and "<" in line:
            assert len(line.split(">", 1)[1].strip("│ ")) > 3, line


def test_user_errors_raise_lmforge_error(tmp_path):
    write_corpus(tmp_path / "data")
    base = ["train", str(tmp_path / "data"), "--out", str(tmp_path / "tok")]
    bad_type = runner.invoke(app, [*base, "--type", "sentencepiece", "--vocab-size", "300"])
    assert isinstance(bad_type.exception, LmforgeError)
    assert "allowed: bpe, byte-bpe, wordpiece, unigram" in str(bad_type.exception)
    bad_size = runner.invoke(app, [*base, "--type", "byte-bpe", "--vocab-size", "10"])
    assert isinstance(bad_size.exception, LmforgeError) and "vocab_size" in str(bad_size.exception)
    no_input = runner.invoke(app, ["train", "--vocab-size", "300", "--out", str(tmp_path / "tok")])
    assert isinstance(no_input.exception, LmforgeError) and "no training input" in str(no_input.exception)
    missing = runner.invoke(app, ["encode", "--tokenizer", str(tmp_path / "nope"), "hi"])
    assert isinstance(missing.exception, LmforgeError) and "nope" in str(missing.exception)


def test_real_entry_point_exits_2_without_traceback(tmp_path):
    """Runs `python -m lmforge tokenizer ...` as a user would."""
    missing = tmp_path / "no_such_corpus.txt"
    cmd = [sys.executable, "-m", "lmforge", "tokenizer", "train", "--input", str(missing)]
    cmd += ["--vocab-size", "300", "--out", str(tmp_path / "tok")]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and str(missing) in result.stderr
    assert not (tmp_path / "tok").exists()
