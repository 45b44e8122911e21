"""Two-sided label smoothing: soft, noisy labels (ganhacks #6, Chintala et al. 2016; the seed notes)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

import ganbench
from ganbench.settings import refuse_unless_targets


@dataclass(frozen=True)
class Params:
    real_low: ganbench.NonNegativeFloat = 0.7  # real targets are drawn from U[real_low, real_high]
    real_high: ganbench.NonNegativeFloat = 1.2  # upper end of the real targets' range
    fake_low: ganbench.NonNegativeFloat = 0.0  # fake targets are drawn from U[fake_low, fake_high]
    fake_high: ganbench.NonNegativeFloat = 0.3  # upper end of the fake targets' range


class TwoSidedLabelSmoothing:
    """Draws each real and fake target uniformly from its own range (default [0.7, 1.2] and [0, 0.3])."""

    name = "two-sided-label-smoothing"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    @classmethod
    def check(cls, params: Params, setup) -> str | None:
        refusal = refuse_unless_targets(cls.name, setup)
        if refusal:
            return refusal
        p = params
        if p.real_low > p.real_high or p.fake_low > p.fake_high:
            return (f"{cls.name}: each range needs low <= high; got real [{p.real_low}, {p.real_high}], "
                    f"fake [{p.fake_low}, {p.fake_high}]")
        if p.fake_high >= p.real_low:
            # Overlapping ranges would tell D that some fakes are more real than some reals.
            return f"{cls.name}: fake_high ({p.fake_high}) must lie below real_low ({p.real_low})"
        return None

    @staticmethod
    def _uniform(run: ganbench.Run, like: torch.Tensor, low: float, high: float) -> torch.Tensor:
        u = torch.rand(like.shape, generator=run.rng, device=like.device, dtype=like.dtype)
        return low + (high - low) * u

    @ganbench.hookimpl
    def ganbench_discriminator_targets(self, run: ganbench.Run, targets: ganbench.Targets) -> None:
        targets.real = self._uniform(run, targets.real, self.p.real_low, self.p.real_high)
        targets.fake = self._uniform(run, targets.fake, self.p.fake_low, self.p.fake_high)


@ganbench.hookimpl
def ganbench_register_tricks():
    return [TwoSidedLabelSmoothing]
