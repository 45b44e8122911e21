"""Noisy labels: swap real and fake targets at random (ganhacks #6; Salimans et al. 2016 discuss label noise)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

import ganbench
from ganbench.settings import refuse_unless_targets


@dataclass(frozen=True)
class Params:
    p: ganbench.Probability = 0.05  # chance that a sample's real/fake target is swapped, per sample


class NoisyLabels:
    """Swaps each sample's real/fake target with probability p, independently in both halves."""

    name = "noisy-labels"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    @classmethod
    def check(cls, params: Params, setup) -> str | None:
        return refuse_unless_targets(cls.name, setup)

    # trylast: swap whatever targets the smoothing tricks set, whatever their order in the suite
    # (run first, a smoothing trick would overwrite the swapped targets).
    @ganbench.hookimpl(trylast=True)
    def ganbench_discriminator_targets(self, run: ganbench.Run, targets: ganbench.Targets) -> None:
        real, fake = targets.real, targets.fake
        flip_real = torch.rand(real.shape, generator=run.rng, device=real.device) < self.p.p
        flip_fake = torch.rand(fake.shape, generator=run.rng, device=fake.device) < self.p.p
        # A flipped sample takes the other half's target at the same index (real and fake batches
        # have the same size), so smoothed targets are swapped, not just 1 <-> 0.
        targets.real = torch.where(flip_real, fake, real)
        targets.fake = torch.where(flip_fake, real, fake)


@ganbench.hookimpl
def ganbench_register_tricks():
    return [NoisyLabels]
