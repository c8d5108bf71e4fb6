"""Builds a uint8-in / uint8-out TFLite depth model, the form of published int8 depth models (raw uint8 RGB in,
uint8 depth codes times a scale out), from an int8 model: a QUANTIZE op takes the uint8 input onto the int8 one,
another takes the int8 output onto a uint8 one, as TensorFlow's converter does for ``inference_input_type=uint8``."""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema


def _quantization(scale: float, zero_point: int) -> schema.QuantizationParametersT:
    params = schema.QuantizationParametersT()
    params.scale, params.zeroPoint = [float(scale)], [int(zero_point)]
    return params


def _tensor(model: schema.ModelT, like: schema.TensorT, name: bytes, scale: float, zero_point: int) -> int:
    tensor = schema.TensorT()
    tensor.shape, tensor.type, tensor.name = list(like.shape), schema.TensorType.UINT8, name
    tensor.quantization = _quantization(scale, zero_point)
    model.buffers.append(schema.BufferT())
    tensor.buffer = len(model.buffers) - 1
    graph = model.subgraphs[0]
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def to_uint8_io(int8_path: Path, out: Path, input_scale: float = 1 / 255, input_zero_point: int = 0) -> Path:
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(int8_path.read_bytes()), 0))
    graph = model.subgraphs[0]
    (int8_in,), (int8_out,) = graph.inputs, graph.outputs
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = schema.BuiltinOperator.QUANTIZE, 114, 2
    model.operatorCodes.append(code)
    quantize = len(model.operatorCodes) - 1
    out_params = graph.tensors[int8_out].quantization
    uint8_in = _tensor(model, graph.tensors[int8_in], b"image_uint8", input_scale, input_zero_point)
    out_scale, out_zero_point = out_params.scale[0], out_params.zeroPoint[0] + 128  # the same real values in uint8
    uint8_out = _tensor(model, graph.tensors[int8_out], b"depth_uint8", out_scale, out_zero_point)
    first, last = schema.OperatorT(), schema.OperatorT()
    first.opcodeIndex = last.opcodeIndex = quantize
    first.inputs, first.outputs = [uint8_in], [int8_in]
    last.inputs, last.outputs = [int8_out], [uint8_out]
    graph.operators = [first, *graph.operators, last]
    graph.inputs, graph.outputs = np.array([uint8_in]), np.array([uint8_out])
    for signature in model.signatureDefs or []:
        signature.inputs[0].tensorIndex, signature.outputs[0].tensorIndex = uint8_in, uint8_out
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out.write_bytes(builder.Output())
    return out
