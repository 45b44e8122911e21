"""Least-squares GAN (Mao et al. 2017, "Least Squares Generative Adversarial Networks"), 0-1-1 coding.

D regresses its raw output to the targets (a = 0 for fake, b = 1 for real); G pushes D(G(z)) to c = 1.
"""
from __future__ import annotations

from torch import Tensor

import ganbench


class LSGAN:
    """Least-squares loss with a-b-c = 0-1-1 coding (Mao et al. 2017)."""

    name = "lsgan"
    params = None
    uses_targets = True  # a smoothed target moves b (or a), as label smoothing intends
    scores = "least-squares"  # D regresses to 1 (real) and 0 (fake)

    @ganbench.hookimpl
    def ganbench_discriminator_loss(self, scores: ganbench.Scores, targets: ganbench.Targets) -> Tensor:
        return 0.5 * (scores.real - targets.real).pow(2).mean() + 0.5 * (scores.fake - targets.fake).pow(2).mean()

    @ganbench.hookimpl
    def ganbench_generator_loss(self, scores: ganbench.Scores) -> Tensor:
        return 0.5 * (scores.fake - 1.0).pow(2).mean()


@ganbench.hookimpl
def ganbench_register_losses():
    return [LSGAN]
