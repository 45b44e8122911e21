"""DRAGAN (Kodali et al. 2017, "On Convergence and Stability of GANs"): the non-saturating loss plus a
gradient penalty in a neighbourhood of the real data.

The penalty follows the authors' code (kodalinaveen3/DRAGAN): x_p = x + 0.5 · std(x) · U[0, 1) per
element, x̂ = x + α (x_p − x) with α ~ U[0, 1) per sample, and λ · E[(||∇D(x̂)||₂ − 1)²] with λ = 10,
taken on D's logits. D and G losses are bce's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

import ganbench
from ganbench_plugins.losses.bce import BCE


@dataclass(frozen=True)
class Params:
    gp_weight: ganbench.NonNegativeFloat = 10.0  # lambda, the penalty's weight (the authors' code: 10)
    spread: ganbench.PositiveFloat = 0.5  # perturbations reach spread · std(real batch) (the authors' code: 0.5)


class DRAGAN(BCE):  # BCE's D and G losses, plus the penalty below
    """Non-saturating BCE with a gradient penalty around perturbed real data (Kodali et al. 2017)."""

    name = "dragan"
    params = Params
    uses_targets = True  # D's BCE reads the targets, so label tricks apply
    scores = "logit"  # D outputs logits

    def __init__(self, params: Params) -> None:
        self.p = params

    @ganbench.hookimpl
    def ganbench_discriminator_penalty(self, run: ganbench.Run, batch: ganbench.Batch) -> Tensor:
        # D phase only; the penalty lives around the real data, so G's samples play no part.
        real = batch.real.detach()
        # std over the whole batch, a device tensor: no host read.
        noise = torch.rand(real.shape, generator=run.rng, device=real.device, dtype=real.dtype)
        perturbed = real + self.p.spread * real.std() * noise
        alpha = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1),
                           generator=run.rng, device=real.device, dtype=real.dtype)
        x_hat = (real + alpha * (perturbed - real)).requires_grad_(True)
        labels = batch.real_labels if batch.fake_labels is not None else None
        scores = ganbench.discriminate(run.models.discriminator, x_hat, labels)
        (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
        # The 1e-12 keeps sqrt differentiable where a gradient is exactly zero (a NaN otherwise).
        norm = (grad.flatten(1).pow(2).sum(1) + 1e-12).sqrt()
        return self.p.gp_weight * (norm - 1.0).pow(2).mean()


@ganbench.hookimpl
def ganbench_register_losses():
    return [DRAGAN]
