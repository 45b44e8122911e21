"""Hinge loss (Lim & Ye 2017, "Geometric GAN"; Miyato et al. 2018, "Spectral Normalization for GANs").

D: mean relu(1 - D(x)) + mean relu(1 + D(G(z))); G: -mean D(G(z)).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

import ganbench


class Hinge:
    """Hinge loss for D, -D(G(z)) for G (Lim & Ye 2017; Miyato et al. 2018)."""

    name = "hinge"
    params = None
    uses_targets = False  # margins are fixed at +-1; there are no labels to smooth
    scores = "margin"  # D aims past +-1; a zero D loss alone is not dominance

    @ganbench.hookimpl
    def ganbench_discriminator_loss(self, scores: ganbench.Scores, targets: ganbench.Targets) -> Tensor:
        # `targets` is taken for a uniform signature across losses; a critic ignores it.
        return F.relu(1.0 - scores.real).mean() + F.relu(1.0 + scores.fake).mean()

    @ganbench.hookimpl
    def ganbench_generator_loss(self, scores: ganbench.Scores) -> Tensor:
        return -scores.fake.mean()


@ganbench.hookimpl
def ganbench_register_losses():
    return [Hinge]
