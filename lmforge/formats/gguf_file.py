"""A small, fast reader of GGUF files (llama.cpp's format, versions 2 and 3, little-endian).

Metadata comes back as plain Python values and tensors as memory-mapped byte arrays ready for `gguf.quants`.
gguf-py's GGUFReader builds a numpy view per array element, about 2 s for a 49k-token vocabulary and its merges;
reading the same header with `struct` from an mmap takes tens of milliseconds. Dequantization stays in `gguf`.
"""

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from lmforge.common.errors import LmforgeError

# GGUF metadata value types (gguf.GGUFValueType).
# Struct formats of the fixed-size ones (numpy reads their arrays with the same codes).
_NUMERIC = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_FLOAT32, _STRING, _ARRAY = 6, 8, 9
_DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 4  # GGML_MAX_DIMS
# The fewest bytes one metadata field / tensor description can take: a header count above size / this is a lie.
_MIN_FIELD_BYTES, _MIN_TENSOR_INFO_BYTES = 8 + 4 + 1, 8 + 4 + 8 + 4 + 8


@dataclass
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # GGUF order: innermost (row length) first, as llama.cpp and gguf-py list it
    tensor_type: GGMLQuantizationType
    data: np.ndarray  # raw bytes [outer dims..., bytes per row], memory-mapped and read-only


class GGUFFile:
    """`fields`: metadata key -> value (float32 scalars in their shortest decimal form); `tensors`: in file order."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise LmforgeError(f"GGUF file not found: {self.path}")
        if not self.path.is_file():
            raise LmforgeError(f"GGUF path is not a file: {self.path}")
        self._pos = 0
        try:
            with self.path.open("rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)  # ValueError if empty
            self._read_header()
        except (struct.error, UnicodeDecodeError, ValueError, KeyError, IndexError) as err:
            raise LmforgeError(f"{self.path} is a damaged or unsupported GGUF file: {err}") from None

    def _take(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self._map, self._pos)
        self._pos += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        length = self._take("<Q")
        raw = self._map[self._pos:self._pos + length]
        if len(raw) != length:
            raise ValueError("string runs past the end of the file")
        self._pos += length
        return raw.decode("utf-8")

    def _value(self, kind: int) -> Any:
        if kind == _STRING:
            return self._string()
        if kind == _ARRAY:
            item_kind, count = self._take("<I"), self._take("<Q")
            if item_kind in _NUMERIC:
                dtype = np.dtype(_NUMERIC[item_kind])
                values = np.frombuffer(self._map, dtype=dtype, count=count, offset=self._pos)
                self._pos += dtype.itemsize * count
                return values.tolist()
            return [self._value(item_kind) for _ in range(count)]
        if kind not in _NUMERIC:
            raise ValueError(f"unknown metadata value type {kind}")
        value = self._take(_NUMERIC[kind])
        return float(str(np.float32(value))) if kind == _FLOAT32 else value  # 1e-05, not 9.99999974e-06

    def _read_header(self) -> None:
        magic = self._map[:4]
        if magic != b"GGUF":
            raise LmforgeError(f"{self.path} is not a GGUF file (it starts with {magic!r}, a GGUF file with b'GGUF')")
        self._pos = 4
        version = self._take("<I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} (a big-endian file, or too new); supported: 2, 3")
        n_tensors, n_fields = self._take("<Q"), self._take("<Q")
        size = len(self._map)
        if n_fields > size // _MIN_FIELD_BYTES or n_tensors > size // _MIN_TENSOR_INFO_BYTES:
            raise ValueError(f"its header announces {n_fields} metadata fields and {n_tensors} tensors, more than "
                             f"a {size}-byte file can hold")
        self.version = version
        self.fields: dict[str, Any] = {}
        for _ in range(n_fields):
            key = self._string()
            self.fields[key] = self._value(self._take("<I"))
        infos = {}
        for _ in range(n_tensors):
            name = self._string()
            n_dims = self._take("<I")
            if not 1 <= n_dims <= _MAX_DIMS:
                raise ValueError(f"tensor {name!r} has {n_dims} dimensions; GGUF allows 1 to {_MAX_DIMS}")
            dims = tuple(self._take("<Q") for _ in range(n_dims))
            if name in infos:
                raise ValueError(f"tensor {name!r} is listed twice")
            infos[name] = (dims, GGMLQuantizationType(self._take("<I")), self._take("<Q"))
        alignment = self.fields.get("general.alignment", _DEFAULT_ALIGNMENT)
        if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"general.alignment={alignment!r}; it must be a positive power of two (default 32)")
        start = -(-self._pos // alignment) * alignment
        self.tensors = [self._tensor(name, dims, kind, start, offset, alignment)
                        for name, (dims, kind, offset) in infos.items()]

    def _tensor(self, name: str, dims: tuple[int, ...], kind: GGMLQuantizationType, start: int, offset: int,
                alignment: int) -> GGUFTensor:
        block, block_bytes = GGML_QUANT_SIZES[kind]
        if min(dims) < 1:
            raise ValueError(f"tensor {name!r} has shape {list(dims)}; every dimension must be >= 1")
        if dims[0] % block:
            raise ValueError(f"tensor {name!r}: row length {dims[0]} is not a multiple of {kind.name}'s block {block}")
        if offset % alignment:
            raise ValueError(f"tensor {name!r}: data offset {offset} is not a multiple of the alignment {alignment}")
        row_bytes = dims[0] // block * block_bytes
        rows = math.prod(dims[1:])  # Python integers: no overflow to a negative size
        offset += start
        if offset + rows * row_bytes > len(self._map):
            raise ValueError(f"tensor {name!r} ({rows * row_bytes} bytes at offset {offset}) runs past the end "
                             f"of the {len(self._map)}-byte file")
        data = np.frombuffer(self._map, dtype=np.uint8, count=rows * row_bytes, offset=offset)
        return GGUFTensor(name, dims, kind, data.reshape(*reversed(dims[1:]), row_bytes))


def dequantize_tensor(tensor: GGUFTensor) -> torch.Tensor:
    """One tensor as float32 in torch order: GGUF lists dimensions innermost first, torch outermost first."""
    shape = tuple(int(dim) for dim in reversed(tensor.shape))
    values = dequantize(tensor.data, tensor.tensor_type)
    if not values.flags.writeable:  # F32 is a view of the read-only memory map
        values = values.copy()
    return torch.from_numpy(values.reshape(shape))
