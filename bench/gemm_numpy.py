#!/usr/bin/env python3
"""numpy (OpenBLAS) float32 matmul on the shapes of kernels/tests/cpu_gemm_bench.cc.

Prints one JSON line per shape, same fields as the native bench:
  {"op","m","n","k","wdtype","ms","gflops","gbps","threads","isa"}
numpy has no fp16/bf16 GEMM worth the name, so every shape runs with fp32 operands (wdtype "f32"): the
native fp16/bf16 rows are compared against these. Shapes come from the native bench when piped in
(`cpu_gemm_bench --list | python3 bench/gemm_numpy.py --shapes -`), else from the copy below.

  python3 bench/gemm_numpy.py [--shapes FILE|-] [--filter SUBSTR] [--min-ms MS]
"""
import argparse
import json
import sys
import time

import numpy as np


def builtin_shapes():
    s = []
    for r in (128, 512):
        s += [("sgemm_nn", 64, r, 256), ("sgemm_nn", 64, 1024, r), ("sgemm_nt", 64, r, 1024),
              ("sgemm_tn", 256, r, 64), ("sgemm_tn", r, 1024, 64)]
    s += [("sgemm_tn", 256, 1024, 64),
          ("sgemm_nn", 64, 1024, 4096), ("sgemm_nn", 64, 16384, 1024), ("sgemm_nt", 64, 1024, 16384),
          ("sgemm_nt", 64, 4096, 1024), ("sgemm_tn", 4096, 1024, 64), ("sgemm_tn", 1024, 16384, 64),
          ("sgemm_nn", 512, 1024, 256), ("sgemm_nn", 512, 256, 1024), ("sgemm_nn", 1024, 1024, 1024)]
    kn = [(128, 512), (512, 128), (1024, 4096), (4096, 1024), (4096, 4096), (1024, 8192), (4096, 16384)]
    for m in (1, 16, 64, 512):
        for k, n in kn:
            s.append(("linear", m, n, k))
    for m in (1, 16, 64, 512):
        for k, n in ((512, 256), (1024, 1024), (4096, 4096)):
            s.append(("linear_t", m, n, k))
    return [{"op": o, "m": m, "n": n, "k": k} for o, m, n, k in s]


def operands(op, m, n, k, rng):
    f = lambda *shape: rng.uniform(-1, 1, size=shape).astype(np.float32)
    if op == "sgemm_nn":
        a, b = f(m, k), f(k, n)
        return (lambda: np.matmul(a, b, out=c)), 4.0 * (m * k + k * n + m * n)
    if op == "sgemm_tn":  # A stored [k, m]
        a, b = f(k, m), f(k, n)
        return (lambda: np.matmul(a.T, b, out=c)), 4.0 * (m * k + k * n + m * n)
    if op in ("sgemm_nt", "linear"):  # B / W stored [n, k]
        a, b = f(m, k), f(n, k)
        return (lambda: np.matmul(a, b.T, out=c)), 4.0 * (m * k + k * n + m * n)
    if op == "linear_t":  # the gathered rows of W, already contiguous: numpy's best case
        a, b = f(m, k), f(k, n)
        return (lambda: np.matmul(a, b, out=c)), 4.0 * (m * k + k * n + m * n)
    raise ValueError(f"unknown op {op}")


def blas_threads():
    try:
        from threadpoolctl import threadpool_info
        return max(i.get("num_threads", 0) for i in threadpool_info())
    except Exception:
        import os
        return int(os.environ.get("OPENBLAS_NUM_THREADS", os.cpu_count() or 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", help="JSON lines with op,m,n,k (- for stdin)")
    ap.add_argument("--filter", default="")
    ap.add_argument("--min-ms", type=float, default=300.0)
    args = ap.parse_args()
    if args.shapes:
        src = sys.stdin if args.shapes == "-" else open(args.shapes)
        shapes = [json.loads(l) for l in src if l.strip()]
    else:
        shapes = builtin_shapes()
    rng = np.random.default_rng(7)
    seen = set()
    threads = blas_threads()
    for s in shapes:
        op, m, n, k = s["op"], int(s["m"]), int(s["n"]), int(s["k"])
        key = f"{op} {m} {n} {k} f32"
        if (op, m, n, k) in seen or (args.filter and args.filter not in key):
            continue  # the native list repeats fp32 shapes once per weight dtype
        seen.add((op, m, n, k))
        global c
        c = np.empty((m, n), dtype=np.float32)
        fn, nbytes = operands(op, m, n, k, rng)
        fn()
        best, total, reps = float("inf"), 0.0, 0
        while (total < args.min_ms * 1e-3 or reps < 3) and reps < 100000:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            best, total, reps = min(best, dt), total + dt, reps + 1
        print(json.dumps({"op": op, "m": m, "n": n, "k": k, "wdtype": "f32", "ms": round(best * 1e3, 4),
                          "gflops": round(2.0 * m * n * k / best * 1e-9, 2), "gbps": round(nbytes / best * 1e-9, 2),
                          "threads": threads, "isa": "numpy-" + np.__version__}), flush=True)


if __name__ == "__main__":
    main()
