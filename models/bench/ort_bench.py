#!/usr/bin/env python3
"""onnxruntime side of the CPU benchmark: one configuration per process.

    python ort_bench.py MODEL.onnx WIDTH HEIGHT THREADS [ITERS] [WARMUP]

Feeds ``multistyle26.onnx`` the same deterministic frame as ``examples/bench.rs`` (style 19),
times ``session.run`` and prints one JSON line: median ms after warm-up, every timing, peak RSS.
"""
from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np
import onnxruntime as ort


def frame(w: int, h: int) -> np.ndarray:
    """The benchmark frame, the same integer pattern as the Rust side, as [1, 3, h, w] f32."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(h), np.arange(w), indexing="ij")
    p = (x * 7 + y * 13 + c * 101 + (x * y) % 251 + (x // 16 + y // 16) * 37) % 256
    return (p.astype(np.float32) / np.float32(255.0))[None]


def main() -> None:
    model, w, h, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    iters = int(sys.argv[5]) if len(sys.argv) > 5 else 7
    warmup = int(sys.argv[6]) if len(sys.argv) > 6 else 2
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    x = frame(w, h)
    weights = np.zeros(26, dtype=np.float32)
    weights[19] = 1.0
    times = []
    out = None
    for i in range(warmup + iters):
        start = time.perf_counter()
        out = sess.run(None, {"image": x, "style_weights": weights})[0]
        ms = (time.perf_counter() - start) * 1e3
        if i >= warmup:
            times.append(ms)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(
        json.dumps(
            {
                "engine": "ort",
                "width": w,
                "height": h,
                "threads": threads,
                "median_ms": round(float(np.median(times)), 1),
                "times_ms": [round(t, 1) for t in times],
                "peak_rss_mib": round(peak, 1),
                "mean": round(float(out.mean()), 6),
            }
        )
    )


if __name__ == "__main__":
    main()
