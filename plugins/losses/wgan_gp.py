"""WGAN-GP (Gulrajani et al. 2017, "Improved Training of Wasserstein GANs", Algorithm 1).

The Wasserstein critic loss plus lambda * E[(||grad D(x_hat)||_2 - 1)^2] at random interpolates
x_hat = eps * x + (1 - eps) * G(z). Recommends the official code's Adam (lr 1e-4, betas 0.5, 0.9),
n_critic = 5 and a critic without BatchNorm (§4), which per-sample gradients need.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import ganbench


@dataclass(frozen=True)
class Params:
    gp_weight: ganbench.NonNegativeFloat = 10.0  # lambda, the gradient penalty's weight (paper: 10)


class WGANGP:
    """Wasserstein critic loss with a gradient penalty on interpolates (Gulrajani et al. 2017)."""

    name = "wgan-gp"
    params = Params
    uses_targets = False  # a critic has no labels to smooth
    scores = "critic"  # unbounded critic values: no saturation point

    def __init__(self, params: Params):
        self.p = params

    @classmethod
    def config_defaults(cls, params: Params) -> dict[str, Any]:
        # gan_64x64.py in igul222/improved_wgan_training; architecture.d_norm applies only to
        # architectures that have that parameter (the suite loader checks).
        adam = {"name": "adam", "lr": 1e-4, "betas": (0.5, 0.9)}
        return {
            **{f"optimizer.{net}.{key}": value for net in ("g", "d") for key, value in adam.items()},
            "d_updates": 5,
            "architecture.d_norm": "layer",
        }

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        if getattr(setup.architecture.params, "d_norm", None) == "batch":
            return ('wgan-gp needs a critic without BatchNorm (Gulrajani et al. 2017 §4: it makes the '
                    'per-sample gradient penalty invalid); set architecture.d_norm = "layer" or "none"')
        return None

    @ganbench.hookimpl
    def ganbench_discriminator_loss(self, scores: ganbench.Scores, targets: ganbench.Targets) -> Tensor:
        # `targets` is taken for a uniform signature across losses; a critic ignores it.
        return scores.fake.mean() - scores.real.mean()

    @ganbench.hookimpl
    def ganbench_generator_loss(self, scores: ganbench.Scores) -> Tensor:
        return -scores.fake.mean()

    @ganbench.hookimpl
    def ganbench_discriminator_penalty(
        self, run: ganbench.Run, batch: ganbench.Batch, scores: ganbench.Scores
    ) -> Tensor:
        # Called in the D phase only. The penalty trains D, so no gradient may flow into G.
        # `scores` are D's outputs at real and fake, not at the interpolates, so they are not used.
        real, fake = batch.real.detach(), batch.fake.detach()
        eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1),
                         generator=run.rng, device=real.device, dtype=real.dtype)
        x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
        # A conditional D scores each interpolate with its real endpoint's class (real and fake
        # labels differ; the real one is the class of the data the critic must stay smooth around).
        labels = batch.real_labels if batch.fake_labels is not None else None
        scores_hat = ganbench.discriminate(run.models.discriminator, x_hat, labels)
        (grad,) = torch.autograd.grad(scores_hat.sum(), x_hat, create_graph=True)
        # The 1e-12 keeps sqrt differentiable where a gradient is exactly zero (a NaN otherwise).
        norm = (grad.flatten(1).pow(2).sum(1) + 1e-12).sqrt()
        return self.p.gp_weight * (norm - 1.0).pow(2).mean()


@ganbench.hookimpl
def ganbench_register_losses():
    return [WGANGP]
