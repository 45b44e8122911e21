"""FID regression: FID rising by `rise_percent` from the best value the run has reached.

StudioGAN's published CIFAR-10 logs include runs whose FID climbed from 49 to 137 with no alert;
this detector is that alert. Reported once per episode; it re-arms when FID comes back down.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ganbench
from ganbench.detection import finite, rounded


@dataclass(frozen=True)
class Params:
    rise_percent: ganbench.PositiveFloat = 25.0  # FID this many percent above its best is a regression
    key: str = "fid"  # the eval-record key to watch (lower is better)


class FidRegression(ganbench.PlainState):
    """FID rising by a set percentage from its best."""

    name = "fid-regression"
    params = Params
    kinds = {"fid-regression": "stopped"}

    def __init__(self, params: Params) -> None:
        self.p = params
        self.best: tuple[int, float] | None = None
        self.active = False

    @ganbench.hookimpl
    def ganbench_detect(self, record: dict[str, Any]) -> list[ganbench.Incident] | None:
        value = record.get(self.p.key)
        if record["kind"] != "eval" or not finite(value):
            return None
        if self.best is None or value < self.best[1]:
            self.best = (record["step"], value)
        best_step, best = self.best
        limit = best * (1 + self.p.rise_percent / 100)
        if value <= limit:
            self.active = False
            return None
        if self.active:
            return None
        self.active = True
        return [ganbench.Incident(
            "fid-regression", "warning",
            f"{self.p.key} rose to {value:.4g}, {100 * (value / best - 1):.0f}% above its best {best:.4g} (step {best_step})",
            {self.p.key: rounded(value), "best": rounded(best), "best_step": best_step,
             "rise_percent": self.p.rise_percent})]


@ganbench.hookimpl
def ganbench_register_detectors():
    return [FidRegression]
