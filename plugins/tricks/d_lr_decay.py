"""D learning-rate decay when D wins (the seed notes' troubleshooting list; cf. TTUR, Heusel et al. 2017,
which balances the players through their learning rates): lower D's rate when its loss nears 0.

At each log record (every `log_every` steps) the interval's mean D loss, already in the record,
decides: at or below `loss_floor`, D's learning rate is multiplied by `factor`, never below
`min_scale` times its starting value. Nothing is read from the device per step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import annotated_types as at

import ganbench

BOUNDED_SCORES = ("logit", "least-squares", "margin")  # losses whose D loss has its minimum at 0
Factor = Annotated[float, at.Interval(gt=0.0, lt=1.0)]


@dataclass(frozen=True)
class Params:
    loss_floor: ganbench.PositiveFloat = 0.1  # D's mean loss over an interval at or below this counts as "near 0"
    factor: Factor = 0.5  # D's learning rate is multiplied by this at each such interval
    min_scale: ganbench.Probability = 0.01  # D's learning rate never drops below this fraction of its start


class DLrDecay(ganbench.PlainState):  # its state: the starting rates (D's current one is in its optimizer)
    """Multiplies D's learning rate by `factor` whenever its mean loss over a log interval nears 0."""

    name = "d-lr-decay"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params
        self.start_lrs: list[float] | None = None

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        scores = getattr(setup.loss.cls, "scores", None)
        if scores not in BOUNDED_SCORES:
            return (f'{cls.name} watches D\'s loss approach 0, but loss "{setup.loss.name}" (scores: {scores}) '
                    "has no floor at 0; use bce, minimax, lsgan or hinge")
        return None

    @ganbench.hookimpl
    def ganbench_log_record(self, run: ganbench.Run, record: dict[str, Any]) -> None:
        groups = run.optimizers.discriminator.param_groups
        if self.start_lrs is None:
            self.start_lrs = [g["lr"] for g in groups]
        loss = record.get("d_loss")
        if isinstance(loss, float) and loss <= self.p.loss_floor:  # False for NaN
            for group, start in zip(groups, self.start_lrs):
                group["lr"] = max(group["lr"] * self.p.factor, start * self.p.min_scale)
        record["d_lr_scale"] = groups[0]["lr"] / self.start_lrs[0]  # the scale the next interval uses


@ganbench.hookimpl
def ganbench_register_tricks():
    return [DLrDecay]
