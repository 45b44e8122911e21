"""Standard normal latents, z ~ N(0, I): the common choice in modern GAN code (e.g. Miyato et al. 2018,
Karras et al. 2019, PyTorch's DCGAN example), where Radford et al. 2015 drew z uniformly (see `uniform`)."""
from __future__ import annotations

import torch
from torch import Tensor

import ganbench


class Gaussian:
    """z ~ N(0, I), the usual choice in modern GAN code."""

    name = "gaussian"
    params = None

    @ganbench.hookimpl
    def ganbench_sample_latent(self, run: ganbench.Run, n: int) -> Tensor:
        return torch.randn(n, run.settings.z_dim, generator=run.rng, device=run.device)


@ganbench.hookimpl
def ganbench_register_latents():
    return [Gaussian]
