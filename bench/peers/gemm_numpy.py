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
#   forward  y  = x @ W.T    M=N, N=O, K=C   (np.matmul(..., out=) into preallocated outputs)
#   dinput   dx = dy @ W     M=N, N=C, K=O   (FedLora overwrites dx too, as the model's backward does)
#   dweight  dW = dy.T @ x   M=O, N=C, K=N   (FedLora accumulates dW += ..., which costs it a read of dW)
# The three are called in turn and each reports its best call (at least 5 calls, 0.3 s per GEMM),
# as FedLora's side does.
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


def best_seconds(fns):
    """Best wall time of one call of each function, calling them in turn (at least 5 times, 0.3 s each)."""
    for fn in fns:
        fn()
    best, runs, start = [float("inf")] * len(fns), 0, time.perf_counter()
    while runs < 5 or time.perf_counter() - start < 0.3 * len(fns):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
        runs += 1
    return best


def measure(n, c, o):
    rng = np.random.default_rng(1234)
    x = rng.uniform(-1, 1, (n, c)).astype(np.float32)
    w = rng.uniform(-1, 1, (o, c)).astype(np.float32)
    dy = rng.uniform(-1, 1, (n, o)).astype(np.float32)
    flops = 2.0 * n * c * o
    result = {"n": n, "c": c, "o": o}
    names = ("forward", "dinput", "dweight")
    # Outputs preallocated, as FedLora's are: no allocation or page faults inside the timing.
    y, dx, dw = np.empty((n, o), np.float32), np.empty((n, c), np.float32), np.empty((o, c), np.float32)
    seconds = best_seconds((lambda: np.matmul(x, w.T, out=y), lambda: np.matmul(dy, w, out=dx),
                            lambda: np.matmul(dy.T, x, out=dw)))
    for name, best in zip(names, seconds):
        result[name] = flops / best / 1e9
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
