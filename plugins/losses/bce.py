"""Non-saturating GAN loss (Goodfellow et al. 2014, §3): D minimises binary cross-entropy, G maximises log D(G(z)).

Written on logits with BCE-with-logits and softplus, which stay finite for any logit.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

import ganbench


class BCE:
    """Non-saturating loss: binary cross-entropy for D, -log D(G(z)) for G (Goodfellow et al. 2014)."""

    name = "bce"
    params = None
    uses_targets = True  # label smoothing and noisy labels act through the targets
    scores = "logit"  # D outputs logits; detectors read saturation from them

    @ganbench.hookimpl
    def ganbench_discriminator_loss(self, scores: ganbench.Scores, targets: ganbench.Targets) -> Tensor:
        return (F.binary_cross_entropy_with_logits(scores.real, targets.real)
                + F.binary_cross_entropy_with_logits(scores.fake, targets.fake))

    @ganbench.hookimpl
    def ganbench_generator_loss(self, scores: ganbench.Scores) -> Tensor:
        # -log sigmoid(x) = softplus(-x)
        return F.softplus(-scores.fake).mean()


@ganbench.hookimpl
def ganbench_register_losses():
    return [BCE]
