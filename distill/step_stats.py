"""Training figures kept on the device between log intervals, so the loop never waits for the host per step.

The loss parts' sums (over finite values only) and counts, the number of skipped updates, and the longest run of
consecutive skips are device tensors; :meth:`StepStats.read` brings them to the host in one transfer at a log
interval, where the consecutive-skip limit is checked.
"""

from __future__ import annotations

import torch


class StepStats:
    """Running loss-part means and non-finite-step counters for one log interval, on ``device``."""

    def __init__(self, device: torch.device, skipped_before: int = 0) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor] = {}
        self.skipped_total = torch.tensor(float(skipped_before), device=device)
        self.consecutive = torch.zeros((), device=device)  # skips in a row up to now (carried across intervals)
        self.longest_run = torch.zeros((), device=device)  # the longest run of skips seen in this interval

    def add_parts(self, parts: dict[str, torch.Tensor]) -> None:
        """Add one micro-batch's loss parts; non-finite values are left out of the means."""
        for name, value in parts.items():
            value = value.detach().float()
            finite = torch.isfinite(value)
            if name not in self.sums:
                self.sums[name] = torch.zeros((), device=self.device)
                self.counts[name] = torch.zeros((), device=self.device)
            self.sums[name] += torch.where(finite, value, 0.0)
            self.counts[name] += finite.float()

    def add_step(self, skipped: torch.Tensor) -> None:
        """Record one optimizer step; ``skipped`` is 1.0 where its update was skipped."""
        self.skipped_total += skipped
        self.consecutive = (self.consecutive + 1.0) * skipped
        self.longest_run = torch.maximum(self.longest_run, self.consecutive)

    def read(self) -> tuple[dict[str, float], int, int]:
        """(loss-part means, skipped updates so far, longest run of skips in the interval), then a new interval."""
        names = list(self.sums)
        values = torch.stack(
            [self.skipped_total, self.longest_run, *(self.sums[n] for n in names), *(self.counts[n] for n in names)]
        ).tolist()  # the one host synchronisation of the interval
        skipped, longest = int(values[0]), int(values[1])
        sums, counts = values[2 : 2 + len(names)], values[2 + len(names) :]
        means = {name: total / count for name, total, count in zip(names, sums, counts) if count > 0}
        self.sums, self.counts = {}, {}
        self.longest_run = self.consecutive.clone()
        return means, skipped, longest
