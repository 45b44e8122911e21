"""One-sided label smoothing (Salimans et al. 2016, "Improved Techniques for Training GANs", §3.4)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

import ganbench
from ganbench.settings import refuse_unless_targets


@dataclass(frozen=True)
class Params:
    real: ganbench.Probability = 0.9  # target for real samples; fake targets stay 0


class OneSidedLabelSmoothing:
    """Replaces D's real targets 1 with `real` (0.9); fake targets stay 0."""

    name = "one-sided-label-smoothing"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    @classmethod
    def check(cls, params: Params, setup) -> str | None:
        return refuse_unless_targets(cls.name, setup)

    @ganbench.hookimpl
    def ganbench_discriminator_targets(self, targets: ganbench.Targets) -> None:
        # A new tensor, not fill_: the core may hand every step the same cached ones tensor.
        targets.real = torch.full_like(targets.real, self.p.real)


@ganbench.hookimpl
def ganbench_register_tricks():
    return [OneSidedLabelSmoothing]
