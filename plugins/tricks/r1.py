"""R1 gradient penalty (Mescheder et al. 2018, "Which Training Methods for GANs do actually Converge?", eq. 9):
gamma/2 · E[||∇_x D(x)||²] on real data only."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

import ganbench


@dataclass(frozen=True)
class Params:
    gamma: ganbench.NonNegativeFloat = 10.0  # the penalty's weight (the paper uses 10 for most image sets)


class R1:
    """Penalises D's input gradient on real samples: gamma/2 · E||∇D(x_real)||² (Mescheder et al. 2018)."""

    name = "r1"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    @ganbench.hookimpl
    def ganbench_discriminator_penalty(self, run: ganbench.Run, batch: ganbench.Batch) -> Tensor:
        # D phase only. D is scored again on a leaf copy of the real batch (the exact tensor it
        # scored, after any input trick), so the gradient is taken with respect to the data alone.
        real = batch.real.detach().requires_grad_(True)
        labels = batch.real_labels if batch.fake_labels is not None else None
        scores = ganbench.discriminate(run.models.discriminator, real, labels)
        # create_graph: the penalty is itself differentiated with respect to D's weights.
        (grad,) = torch.autograd.grad(scores.sum(), real, create_graph=True)
        return 0.5 * self.p.gamma * grad.flatten(1).pow(2).sum(dim=1).mean()


@ganbench.hookimpl
def ganbench_register_tricks():
    return [R1]
