"""LiteRT (TFLite) for Android and embedded boards: export with ``litert-torch``, int8 with ``ai-edge-quantizer``'s
static rules (int8 weights and activations, int8 input and output; sums and hard-swish stay fp32), and a runner
for any ``.tflite`` depth model.

The runner reads everything from the file: the input size and layout (our exports keep NCHW; published models are
mostly NHWC), and for a quantised input or output its scale and zero point: pictures go in as real values in
[0, 1] (``q = round(x / scale) + zero_point``, which is the raw pixel for the common uint8 scale 1/255) and the
output comes back as ``scale * (q - zero_point)``.

Running a ``.tflite`` needs only the interpreter (``pip install 'depth-distill[litert]'``: ``ai-edge-litert``, a few
seconds); writing one needs the exporter and the quantiser as well (``pip install 'depth-distill[export-litert]'``:
``litert-torch``, which brings JAX, and ``ai-edge-quantizer``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distill.deploy.runtime import recorded_kind, resolve_kind
from distill.students.config import check_input_size

logger = logging.getLogger(__name__)

#: The missing-package messages: running a file needs the interpreter only, writing one the exporter too.
RUN_HINT = "running a .tflite needs the LiteRT interpreter: pip install 'depth-distill[litert]' (ai-edge-litert)"
EXPORT_HINT = (
    "writing a .tflite needs LiteRT's exporter: pip install 'depth-distill[export-litert]' (litert-torch, "
    "ai-edge-litert, ai-edge-quantizer)"
)


def export_tflite(model, path: str | os.PathLike, height: int, width: int) -> Path:
    """``model`` (float (1, 3, H, W) RGB in [0, 1] -> (1, 1, H, W)) as an fp32 ``.tflite``; batch 1."""
    import torch

    try:
        import litert_torch
    except ImportError as error:
        raise ImportError(EXPORT_HINT) from error
    check_input_size(width, height)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = (torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)),)
    litert_torch.convert(model.eval().cpu(), example).export(str(path))
    return path


#: Ops left in fp32 in the int8 file, measured on the demo's trained reference student at 256x192 (48 held-out
#: NYU-layout scenes, 16 generated calibration scenes, 1 thread, median of 30 calls): with every op in int8 AbsRel
#: rose by 0.018 and the file ran at 14.5 ms (fp32: 10.2 ms). HARD_SWISH in fp32 removes the slow int8 hard-swish
#: kernel (8.9 ms); then, of each other op type also left in fp32, only ADD fixed the accuracy (rise 0.0000: the
#: residual and skip sums mix branches of very different ranges, which one int8 scale cannot hold), at 9.3 ms; none
#: made it faster by more than noise, and CONV_2D in fp32 made it slower (13.7 ms).
FLOAT_OPS = ("ADD", "HARD_SWISH")


def quantize_tflite(
    fp32_path: str | os.PathLike,
    out: str | os.PathLike,
    calibration: Sequence[np.ndarray],
    float_ops: Sequence[str] = FLOAT_OPS,
) -> Path:
    """Static int8: per-channel int8 weights, int8 activations, int8 input and output (``ai-edge-quantizer``'s
    ``static_wi8_ai8`` rules, min-max calibrated on ``calibration`` batches, float32 (1, 3, H, W) in [0, 1]), except
    the op types in ``float_ops`` (TFLite op names), which stay fp32 between a dequantise and a quantise. The
    dynamic recipe is not offered: it ran 1.6-2x slower than fp32 here."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe, recipe_manager

    rules = recipe_manager.RecipeManager()
    rules.add_static_config(
        regex=".*",
        operation_name=recipe.TFLOperationName.ALL_SUPPORTED,
        activation_num_bits=8,
        weight_num_bits=8,
        algorithm_key=recipe_manager.AlgorithmName.MIN_MAX_UNIFORM_QUANT,
    )
    for op in float_ops:
        rules.add_quantization_config(
            regex=".*",
            operation_name=recipe.TFLOperationName[op],
            algorithm_key=recipe_manager.AlgorithmName.NO_QUANTIZE,
        )
    signatures = Interpreter(model_path=str(fp32_path)).get_signature_list()
    signature = next(iter(signatures))
    (input_name,) = signatures[signature]["inputs"]
    engine = quantizer.Quantizer(str(fp32_path))
    engine.load_quantization_recipe(rules.get_quantization_recipe())
    samples = {signature: [{input_name: np.asarray(batch, dtype=np.float32)} for batch in calibration]}
    result = engine.quantize(engine.calibrate(samples))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    result.export_model(str(out), overwrite=True)
    return Path(out)


def _quantise(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if detail["dtype"] == np.float32 or not scale:
        return values.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.rint(values / scale) + zero_point, info.min, info.max).astype(detail["dtype"])


def _dequantise(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if values.dtype == np.float32 or not scale:
        return values.astype(np.float32)
    return (scale * (values.astype(np.float32) - zero_point)).astype(np.float32)


class TfliteRunner:
    """A ``.tflite`` depth model run by the LiteRT interpreter, one picture per call (the files have batch 1)."""

    def __init__(
        self,
        path: str | os.PathLike,
        width: int | None = None,
        height: int | None = None,
        threads: int | None = None,
        kind: str | None = None,
    ) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise ImportError(RUN_HINT) from error
        self.path = Path(path)
        self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads or os.cpu_count())
        self.interpreter.allocate_tensors()
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            found = f"{len(inputs)} and {len(outputs)}"
            raise ValueError(f"{path}: a depth model has one input and one output, found {found}")
        self.input, self.output = inputs[0], outputs[0]
        shape = [int(v) for v in self.input["shape"]]
        if len(shape) != 4 or 3 not in (shape[1], shape[3]):
            raise ValueError(f"{path}: input shape {shape} is not an RGB image batch (1, 3, H, W) or (1, H, W, 3)")
        self.channels_last = shape[3] == 3 and shape[1] != 3
        self.height, self.width = (shape[1], shape[2]) if self.channels_last else (shape[2], shape[3])
        if (width and width != self.width) or (height and height != self.height):
            raise ValueError(f"{path} takes {self.width}x{self.height} (W x H), not {width}x{height}; export again")
        self.name = f"tflite:{self.path.name}"
        self.kind = resolve_kind(self.path, recorded_kind(self.path), kind)

    def run_raw(self, raw_input: np.ndarray) -> np.ndarray:
        """One call of the file as the interpreter sees it: the input tensor in, the output tensor out, no scaling."""
        self.interpreter.set_tensor(self.input["index"], raw_input)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        maps = []
        for image in np.asarray(batch, dtype=np.float32):  # (3, H, W) in [0, 1]
            values = image.transpose(1, 2, 0) if self.channels_last else image
            output = _dequantise(self.run_raw(_quantise(values[None], self.input)), self.output)
            maps.append(_single_map(output, self.path))
        return np.stack(maps)  # (B, H, W)


def _single_map(output: np.ndarray, path: Path) -> np.ndarray:
    """(1, 1, h, w), (1, h, w) or (1, h, w, 1) -> (h, w); the map may be smaller than the input (resized later)."""
    squeezed = np.squeeze(output)
    if squeezed.ndim != 2:
        raise ValueError(f"{path}: output of shape {output.shape} is not one depth map")
    return squeezed
