"""A small safetensors writer and reader in numpy, for the fixture scripts.

Debian ships no `safetensors` package, so this writes the format directly, laid out as the
reference writer does: 8-byte little-endian header length, a compact JSON header with
"__metadata__" first, padded with spaces to a multiple of 8 bytes, then the tensors' bytes in
order, with no gaps. Writes are atomic (temporary file in the same directory, then rename).
"""

import json
import os
import struct

import numpy as np
import torch

_TORCH_DTYPES = {
    torch.float32: ("F32", "<f4"),
    torch.float16: ("F16", "<f2"),
    torch.float64: ("F64", "<f8"),
    torch.int32: ("I32", "<i4"),
    torch.int64: ("I64", "<i8"),
}


def _tensor_bytes(value):
    """(dtype name, shape, little-endian bytes) of a torch tensor."""
    value = value.detach().cpu().contiguous()
    if value.dtype == torch.bfloat16:
        # numpy has no bfloat16: store its 16 bits as they are.
        return "BF16", list(value.shape), value.view(torch.int16).numpy().astype("<i2").tobytes()
    if value.dtype not in _TORCH_DTYPES:
        raise TypeError(f"unsupported dtype {value.dtype}")
    name, numpy_dtype = _TORCH_DTYPES[value.dtype]
    return name, list(value.shape), value.numpy().astype(numpy_dtype).tobytes()


def save(path, tensors, metadata=None):
    """Writes an ordered dict name -> torch tensor, with an optional str -> str metadata map."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, value in tensors.items():
        dtype, shape, data = _tensor_bytes(value)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in blobs:
            f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def load(path):
    """Reads a file written by save() back into (dict name -> numpy array, metadata)."""
    with open(path, "rb") as f:
        raw = f.read()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    metadata = header.pop("__metadata__", {})
    data = raw[8 + length :]
    numpy_types = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I32": "<i4", "I64": "<i8", "BF16": "<i2"}
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        tensors[name] = np.frombuffer(data[begin:end], dtype=numpy_types[entry["dtype"]]).reshape(entry["shape"])
    return tensors, metadata
