"""ExecuTorch for Android and iOS: export to a ``.pte`` program lowered to XNNPACK, int8 through XNNPACK's PT2E
quantiser (symmetric, per-channel weights, calibrated), and a runner on ExecuTorch's Python runtime.

The runtime's thread pool is process-wide and must be sized BEFORE any method is loaded (resetting it after a
method is loaded made ``execute`` hang). Install with ``pip install 'depth-distill[executorch]'``, for running a
``.pte`` and for writing one alike: ExecuTorch publishes its Python runtime only inside the full ``executorch``
package, which also holds the exporter.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distill.deploy.runtime import recorded_kind, resolve_kind
from distill.students.config import check_input_size

INSTALL_HINT = (
    "running or writing a .pte needs ExecuTorch: pip install 'depth-distill[executorch]' (the executorch package, "
    "whose runtime comes only with its exporter)"
)


def _lower(program) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def export_pte(
    model, path: str | os.PathLike, height: int, width: int, calibration: Sequence[np.ndarray] | None = None
) -> Path:
    """``model`` as a ``.pte`` for XNNPACK, batch 1; int8 when ``calibration`` batches (float32 (1, 3, H, W) in
    [0, 1]) are given, fp32 otherwise."""
    import torch

    try:
        import executorch  # noqa: F401
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    check_input_size(width, height)
    model = model.eval().cpu()
    example = (torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)),)
    if calibration is not None:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(torch.export.export(model, example).module(), quantizer)
        with torch.no_grad():
            for batch in calibration:
                prepared(torch.from_numpy(np.asarray(batch, dtype=np.float32)))
        model = convert_pt2e(prepared)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_lower(torch.export.export(model, example)))
    return path


_THREADS_SET: list[int] = []


def _set_threads(threads: int | None) -> None:
    """Size the process-wide pool once, before the first method is loaded (later resets hang ``execute``)."""
    if _THREADS_SET or not threads:
        return
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(threads)
    _THREADS_SET.append(threads)


class PteRunner:
    """A ``.pte`` depth model on the ExecuTorch runtime; input size from the program's method metadata."""

    def __init__(
        self,
        path: str | os.PathLike,
        width: int | None = None,
        height: int | None = None,
        threads: int | None = None,
        kind: str | None = None,
    ) -> None:
        try:
            from executorch.runtime import Runtime
        except ImportError as error:
            raise ImportError(INSTALL_HINT) from error
        self.path = Path(path)
        _set_threads(threads)
        self.method = Runtime.get().load_program(str(self.path)).load_method("forward")
        sizes = list(self.method.metadata.input_tensor_meta(0).sizes())
        if len(sizes) != 4 or sizes[1] != 3:
            raise ValueError(f"{path}: input {sizes} is not an RGB batch (B, 3, H, W)")
        self.batch, _, self.height, self.width = (int(v) for v in sizes)
        if (width and width != self.width) or (height and height != self.height):
            raise ValueError(f"{path} takes {self.width}x{self.height} (W x H), not {width}x{height}; export again")
        self.name = f"executorch:{self.path.name}"
        self.kind = resolve_kind(self.path, recorded_kind(self.path), kind)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        images = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        maps = [self.method.execute([images[i : i + self.batch]])[0] for i in range(0, len(images), self.batch)]
        return torch.cat(maps)[:, 0].float().numpy()  # (B, H, W)
