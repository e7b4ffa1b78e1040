# Regenerate with Debian's PyTorch, from the repository root:
#     /usr/bin/python3 tests/pytorch/make_safetensors_fixture.py
# Writes tests/fixtures/python_dtypes.safetensors: one small tensor of each dtype FedLora's
# safetensors reader accepts, written by Python (not by the C# writer), with metadata.
"""For each float dtype X (F16, BF16, F64) the file holds "x.<X>" and "x.<X>.as_f32", the same
values converted to float32 by PyTorch, so the C# reader's conversion is checked against
PyTorch's. Integer tensors "tokens.I32" and "tokens.I64" hold the same known values. The values
include rounding cases, negative zero, subnormals, the largest finite F16 and infinities."""

import os
import sys
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedlora_safetensors  # noqa: E402

OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "python_dtypes.safetensors")

VALUES = [0.0, -0.0, 1.0, -2.5, 0.1, 1.0 / 3.0, 3.14159265358979, 65504.0, 1e-7, 6e-8, -1e30, 1e30,
          float("inf"), float("-inf"), 123456.789, -0.000123]
TOKENS = [[0, 1, 255, 256], [-1, 2147483647, -2147483648, 42]]


def main():
    source = torch.tensor(VALUES, dtype=torch.float64).reshape(4, 4)
    tensors = OrderedDict()
    tensors["x.F32"] = source.to(torch.float32)
    for name, dtype in (("F16", torch.float16), ("BF16", torch.bfloat16), ("F64", torch.float64)):
        converted = source.to(dtype)
        tensors[f"x.{name}"] = converted
        tensors[f"x.{name}.as_f32"] = converted.to(torch.float32)
    tensors["tokens.I32"] = torch.tensor(TOKENS, dtype=torch.int32)
    tensors["tokens.I64"] = torch.tensor(TOKENS, dtype=torch.int64)
    tensors["scalar"] = torch.tensor(7.5, dtype=torch.float32)
    tensors["empty"] = torch.zeros(0, 3, dtype=torch.float32)
    fedlora_safetensors.save(OUTPUT, tensors, {"format": "fedlora-dtype-fixture", "version": "1", "writer": "python"})
    print(f"wrote {os.path.relpath(OUTPUT)}: {len(tensors)} tensors, {os.path.getsize(OUTPUT)} bytes")


if __name__ == "__main__":
    main()
