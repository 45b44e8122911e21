"""Wasserstein GAN with weight clipping (Arjovsky et al. 2017, "Wasserstein GAN", Algorithm 1).

The critic maximises mean D(x) - mean D(G(z)); after every critic step each weight is clipped to
[-clip, clip] to keep it (roughly) Lipschitz. Recommends the paper's RMSProp, lr 5e-5, n_critic = 5.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import ganbench


@dataclass(frozen=True)
class Params:
    clip: ganbench.PositiveFloat = 0.01  # critic weights are clamped to [-clip, clip] after each D step (paper: c = 0.01)


class WGAN:
    """Wasserstein critic loss with weight clipping (Arjovsky et al. 2017)."""

    name = "wgan"
    params = Params
    uses_targets = False  # a critic has no labels to smooth
    scores = "critic"  # unbounded critic values: no saturation point

    def __init__(self, params: Params):
        self.p = params

    @classmethod
    def config_defaults(cls, params: Params) -> dict[str, Any]:
        # Algorithm 1: alpha = 5e-5, n_critic = 5, RMSProp (momentum-based optimizers were unstable).
        return {
            "optimizer.g.name": "rmsprop",
            "optimizer.g.lr": 5e-5,
            "optimizer.d.name": "rmsprop",
            "optimizer.d.lr": 5e-5,
            "d_updates": 5,
        }

    @ganbench.hookimpl
    def ganbench_discriminator_loss(self, scores: ganbench.Scores, targets: ganbench.Targets) -> Tensor:
        # `targets` is taken for a uniform signature across losses; a critic ignores it.
        return scores.fake.mean() - scores.real.mean()

    @ganbench.hookimpl
    def ganbench_generator_loss(self, scores: ganbench.Scores) -> Tensor:
        return -scores.fake.mean()

    @ganbench.hookimpl
    def ganbench_after_discriminator_step(self, run: ganbench.Run) -> None:
        with torch.no_grad():
            for p in run.models.discriminator.parameters():
                p.clamp_(-self.p.clip, self.p.clip)


@ganbench.hookimpl
def ganbench_register_losses():
    return [WGAN]
