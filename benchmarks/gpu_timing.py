"""Timing helpers of the GPU suite: a median rate over a time budget, and the GPU's busy fraction from NVML."""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import torch


def timed_rate(suite: Any, step: Callable[[], Any], items_per_call: int, budget: float, warmup: int = 2,
               min_calls: int = 3) -> dict[str, float]:
    """Calls ``step`` ``warmup`` times, then until ``budget`` seconds and ``min_calls`` calls have passed.
    Returns the median seconds per call and the items/s it gives."""
    for _ in range(warmup):
        step()
    suite.synchronize()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - started < budget:
        begun = time.perf_counter()
        step()
        suite.synchronize()
        times.append(time.perf_counter() - begun)
    median = statistics.median(times)
    return {"calls": len(times), "median_s": round(median, 5), "items_per_s": round(items_per_call / median, 1)}


class BusySampler(threading.Thread):
    """The GPU's busy percentage from NVML every 0.1 s while the block runs (None without NVML or a GPU)."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(daemon=True)
        self.samples: list[int] = []
        self.stop = threading.Event()
        self.handle = None
        if device.type == "cuda":
            with contextlib.suppress(Exception):
                import pynvml

                pynvml.nvmlInit()
                self.handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
                self.read = lambda: pynvml.nvmlDeviceGetUtilizationRates(self.handle).gpu

    def run(self) -> None:
        while self.handle is not None and not self.stop.wait(0.1):
            self.samples.append(self.read())

    def fraction(self) -> float | None:
        return round(statistics.mean(self.samples) / 100, 3) if self.samples else None
