"""Loading ONNX face models shipped inside PyPI packages into onnxruntime, offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from faceveil.errors import InputError, MissingExtraError


def package_file(package: str, relative: str, extra: str | None = None, pip_name: str | None = None) -> Path:
    """Path of a file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(f"the model in package {package!r}", extra or package, pip_name)
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise InputError(f"model file {path} is missing from the installed package {package!r}")
    return path


def fold_quantized_weights(model_bytes: bytes, dynamic_input: bool = True) -> bytes:
    """Turn constant DequantizeLinear/Reshape chains into plain float weights and free the input size.

    Block-quantised files (YuNet int8bq) then run in onnxruntime's fast float kernels at any image size.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    kept = []
    for node in graph.node:
        folded = _fold_node(node, consts, helper)
        if folded is None:
            kept.append(node)
        else:
            consts[node.output[0]] = folded
    used = {name for node in kept for name in node.input}
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items() if k in used)
    inputs = [i for i in graph.input if i.name not in consts]
    del graph.input[:]
    graph.input.extend(inputs)
    if dynamic_input:
        for inp in graph.input:
            dims = inp.type.tensor_type.shape.dim
            for axis, dim_name in ((0, "batch"), (2, "height"), (3, "width")):
                if len(dims) > axis:
                    dims[axis].ClearField("dim_value")
                    dims[axis].dim_param = dim_name
        del graph.value_info[:]
        for out in graph.output:
            out.type.tensor_type.ClearField("shape")
    return model.SerializeToString()


def _fold_node(node, consts: dict[str, np.ndarray], helper) -> np.ndarray | None:  # type: ignore[no-untyped-def]
    """The constant value of ``node`` when all its inputs are constants of a foldable op, else None."""
    if not node.input or any(i and i not in consts for i in node.input):
        return None
    if node.op_type == "DequantizeLinear":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        x = consts[node.input[0]].astype(np.float32)
        scale = consts[node.input[1]].astype(np.float32)
        zero = (
            consts[node.input[2]].astype(np.float32)
            if len(node.input) > 2 and node.input[2]
            else np.zeros_like(scale)
        )
        axis = attrs.get("axis", 1) % max(x.ndim, 1)
        block = attrs.get("block_size", 0)
        if block and scale.ndim:
            scale = np.repeat(scale, block, axis=axis).take(range(x.shape[axis]), axis=axis)
            zero = np.repeat(zero, block, axis=axis).take(range(x.shape[axis]), axis=axis)
        elif scale.ndim == 1 and scale.size > 1 and x.ndim > 1:
            shape = [1] * x.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return ((x - zero) * scale).astype(np.float32)
    if node.op_type == "Reshape":
        return consts[node.input[0]].reshape(consts[node.input[1]].astype(np.int64))
    return None


def make_session(model_bytes: bytes, threads: int | None):  # type: ignore[no-untyped-def]
    """An onnxruntime CPU session; ``threads`` None lets onnxruntime use every core."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
