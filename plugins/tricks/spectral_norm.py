"""Spectral normalization of D (Miyato et al. 2018, "Spectral Normalization for GANs")."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import ganbench

# Every layer with a weight matrix that sets D's Lipschitz constant; norm layers are left alone.
LAYERS = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)


@dataclass(frozen=True)
class Params:
    n_power_iterations: ganbench.PositiveInt = 1  # power-iteration steps per forward pass (the paper uses 1)


class SpectralNorm:
    """Divides each linear and convolution weight of D by its largest singular value; G is untouched."""

    name = "spectral-norm"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    @ganbench.hookimpl
    def ganbench_configure_models(self, models: ganbench.Models) -> None:
        # list() first: parametrizing adds submodules while we walk the tree.
        for module in list(models.discriminator.modules()):
            if isinstance(module, LAYERS):
                spectral_norm(module, n_power_iterations=self.p.n_power_iterations)


@ganbench.hookimpl
def ganbench_register_tricks():
    return [SpectralNorm]
