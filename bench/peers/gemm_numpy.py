#!/usr/bin/python3
# The OpenBLAS peer of FedLora's GEMM benchmarks: times the matmul family's three GEMMs with numpy
# (Debian's python3-numpy on libopenblas0-pthread) on the same shapes, with all cores.
#
# Run:   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 bench/peers/gemm_numpy.py 2048 512 1536
#        (prints the three GFLOP/s figures; `bash bench/compare-gemm.sh` runs it next to FedLora)
# Serve: ... gemm_numpy.py --serve  reads "N C O" lines on stdin and answers one JSON line each, so
#        that the comparison can interleave peer and FedLora timings shape by shape.
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, when set, force a slower kernel (e.g. Haswell instead of the
# AVX-512 one): unset them for a fair peer, as above. The first output line names the kernel in use.
#
# Shapes (row-major, as FedLora): x (N,C), W (O,C), dy (N,O).
#   forward  y  = x @ W.T    M=N, N=O, K=C
#   dinput   dx = dy @ W     M=N, N=C, K=O
#   dweight  dW = dy.T @ x   M=O, N=C, K=N
# Each is timed as the best of repeated calls (at least 5, for at least 0.3 s), as FedLora's side is.
import ctypes
import json
import os
import sys
import time

import numpy as np


def openblas_info():
    """Kernel, configuration and threads of the OpenBLAS that numpy loaded (read from the library itself)."""
    np.ones((2, 2), np.float32) @ np.ones((2, 2), np.float32)
    paths = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6 and ("openblas" in parts[-1] or "libblas" in parts[-1]):
                paths.add(parts[-1])
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
            config, core = lib.openblas_get_config, lib.openblas_get_corename
        except (OSError, AttributeError):
            continue
        config.restype = core.restype = ctypes.c_char_p
        return {"library": path, "config": config().decode(), "kernel": core().decode(),
                "threads": lib.openblas_get_num_threads()}
    return {"library": ", ".join(sorted(paths)) or "unknown", "config": "not OpenBLAS?", "kernel": "?", "threads": -1}


def best_seconds(fn):
    fn()
    best, runs, start = float("inf"), 0, time.perf_counter()
    while runs < 5 or time.perf_counter() - start < 0.3:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        runs += 1
    return best


def measure(n, c, o):
    rng = np.random.default_rng(1234)
    x = rng.uniform(-1, 1, (n, c)).astype(np.float32)
    w = rng.uniform(-1, 1, (o, c)).astype(np.float32)
    dy = rng.uniform(-1, 1, (n, o)).astype(np.float32)
    flops = 2.0 * n * c * o
    result = {"n": n, "c": c, "o": o}
    for name, fn in (("forward", lambda: x @ w.T), ("dinput", lambda: dy @ w), ("dweight", lambda: dy.T @ x)):
        result[name] = flops / best_seconds(fn) / 1e9
    return result


def main():
    info = openblas_info()
    print(json.dumps({"peer": f"numpy {np.__version__}", **info,
                      "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
                      "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE")}), flush=True)
    if sys.argv[1:] == ["--serve"]:
        for line in sys.stdin:
            if line.strip():
                print(json.dumps(measure(*map(int, line.split()))), flush=True)
    elif len(sys.argv) == 4:
        print(json.dumps(measure(*map(int, sys.argv[1:]))))
    else:
        sys.exit("usage: gemm_numpy.py N C O | --serve")


if __name__ == "__main__":
    main()
