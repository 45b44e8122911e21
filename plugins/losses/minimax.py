"""Minimax GAN loss (Goodfellow et al. 2014, eq. 1): G minimises log(1 - D(G(z))), which saturates early on.

Kept as the paper's baseline for the non-saturating `bce`; D's loss is the same binary cross-entropy.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

import ganbench


class Minimax:
    """Saturating minimax loss: binary cross-entropy for D, log(1 - D(G(z))) for G (Goodfellow et al. 2014)."""

    name = "minimax"
    params = None
    uses_targets = True  # label smoothing and noisy labels act through the targets
    scores = "logit"  # D outputs logits; detectors read saturation from them

    @ganbench.hookimpl
    def ganbench_discriminator_loss(self, scores: ganbench.Scores, targets: ganbench.Targets) -> Tensor:
        return (F.binary_cross_entropy_with_logits(scores.real, targets.real)
                + F.binary_cross_entropy_with_logits(scores.fake, targets.fake))

    @ganbench.hookimpl
    def ganbench_generator_loss(self, scores: ganbench.Scores) -> Tensor:
        # log(1 - sigmoid(x)) = -softplus(x)
        return -F.softplus(scores.fake).mean()


@ganbench.hookimpl
def ganbench_register_losses():
    return [Minimax]
