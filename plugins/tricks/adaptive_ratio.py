"""Adaptive D:G update ratio (ganhacks #14, Chintala et al. 2016; the seed notes' troubleshooting list):
update G more often while D wins too easily, and less once it recovers.

The decision is taken at each log record (every `log_every` steps) from the interval's mean D
accuracy, which the record already holds, so it reads nothing from the device per step. It
changes `run.updates`, which the trainer reads at the start of every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ganbench

ACCURACY_SCORES = ("logit", "margin")  # losses whose D accuracy (real > 0, fake < 0) means something


@dataclass(frozen=True)
class Params:
    strong_acc: ganbench.Probability = 0.9  # D is too strong when its mean accuracy over an interval reaches this
    weak_acc: ganbench.Probability = 0.7  # below this D has recovered: one fewer extra G update
    max_g_updates: ganbench.PositiveInt = 5  # G updates per step never exceed this


class AdaptiveRatio:
    """Adds a G update per step while D's accuracy is at least strong_acc, removes one below weak_acc."""

    name = "adaptive-ratio"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        scores = getattr(setup.loss.cls, "scores", None)
        if scores not in ACCURACY_SCORES:
            return (f'{cls.name} judges D by its accuracy (real scores > 0, fake < 0), which means nothing for loss '
                    f'"{setup.loss.name}" (scores: {scores}); use bce, minimax or hinge')
        if params.weak_acc >= params.strong_acc:
            return f"{cls.name}: weak_acc ({params.weak_acc}) must lie below strong_acc ({params.strong_acc})"
        if params.max_g_updates < setup.g_updates:
            return f"{cls.name}: max_g_updates ({params.max_g_updates}) is below the run's g_updates ({setup.g_updates})"
        return None

    @ganbench.hookimpl
    def ganbench_log_record(self, run: ganbench.Run, record: dict[str, Any]) -> None:
        acc = record.get("d_acc")
        base = run.settings.g_updates
        if isinstance(acc, float) and acc == acc:  # a NaN interval changes nothing
            if acc >= self.p.strong_acc:
                run.updates.g = min(run.updates.g + 1, self.p.max_g_updates)
            elif acc < self.p.weak_acc:
                run.updates.g = max(run.updates.g - 1, base)
        record["g_updates"] = run.updates.g  # what the next interval uses


@ganbench.hookimpl
def ganbench_register_tricks():
    return [AdaptiveRatio]
