"""lmforge's GGUF reader against gguf-py's GGUFReader: the same metadata and tensors, and clear errors."""

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize

from lmforge.common.errors import LmforgeError
from lmforge.formats.gguf_file import GGUFFile
from tests.embedded import embedded_gguf
from tests.unit.test_gguf_import import sentencepiece_vocab, tiny_model, write_gguf


def _reference_fields(reader: gguf.GGUFReader) -> dict:
    out = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        value = field.contents()
        if field.types and field.types[0] == gguf.GGUFValueType.FLOAT32 and len(field.types) == 1:
            value = float(str(np.float32(value)))
        out[name] = value
    return out


def assert_same_as_gguf_py(path):
    ours, ref = GGUFFile(path), gguf.GGUFReader(path)
    assert ours.fields == _reference_fields(ref)
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for mine, theirs in zip(ours.tensors, ref.tensors, strict=True):
        assert mine.shape == tuple(int(d) for d in theirs.shape) and mine.tensor_type == theirs.tensor_type
        assert np.array_equal(dequantize(mine.data, mine.tensor_type), dequantize(theirs.data, theirs.tensor_type))


@pytest.mark.parametrize("qtype", ["F32", "F16", "Q8_0", "Q4_1", "Q4_K", "Q6_K"])
def test_same_as_gguf_py_on_written_files(tmp_path, qtype):
    write_gguf(tmp_path / "m.gguf", tiny_model(), qtype=qtype)
    assert_same_as_gguf_py(tmp_path / "m.gguf")


def test_same_as_gguf_py_with_sentencepiece_metadata(tmp_path):
    write_gguf(tmp_path / "m.gguf", tiny_model(), vocab=sentencepiece_vocab())  # float32 score arrays, bools
    assert_same_as_gguf_py(tmp_path / "m.gguf")


def test_same_as_gguf_py_on_the_embedded_model():
    assert_same_as_gguf_py(embedded_gguf())


def test_truncated_file_is_a_clear_error(tmp_path):
    write_gguf(tmp_path / "m.gguf", tiny_model())
    data = (tmp_path / "m.gguf").read_bytes()
    for cut in (10, 200, len(data) - 100):
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        with pytest.raises(LmforgeError, match="damaged or unsupported GGUF"):
            GGUFFile(tmp_path / "cut.gguf")


def test_unknown_version_is_named(tmp_path):
    (tmp_path / "v9.gguf").write_bytes(b"GGUF" + (9).to_bytes(4, "little") + bytes(16))
    with pytest.raises(LmforgeError, match="GGUF version 9"):
        GGUFFile(tmp_path / "v9.gguf")


def test_empty_file_is_a_clear_error(tmp_path):
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(LmforgeError, match="damaged or unsupported GGUF"):
        GGUFFile(tmp_path / "empty.gguf")
