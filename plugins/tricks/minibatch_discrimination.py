"""Minibatch discrimination (Salimans et al. 2016, "Improved Techniques for Training GANs", §3.2): D compares
each sample with the others in its batch, so a collapsed G is easy to spot."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import ganbench
from ganbench_plugins.architectures.split import append_features, check_split, concat_channels, parts


@dataclass(frozen=True)
class Params:
    kernels: ganbench.PositiveInt = 50  # B, the number of similarity features added (the paper's code: 50 to 100)
    kernel_dim: ganbench.PositiveInt = 5  # C, the rows of each kernel's projection (the paper's code: 5)


class MinibatchDiscriminationLayer(nn.Module):
    """o(x_i)_b = Σ_j exp(-||M_i,b - M_j,b||_1) with M_i = f(x_i) T, appended to f(x_i) as B channels."""

    def __init__(self, in_features: int, kernels: int, kernel_dim: int) -> None:
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(in_features, kernels * kernel_dim) / math.sqrt(in_features))

    def forward(self, h: Tensor) -> Tensor:
        m = (h.flatten(1) @ self.T).reshape(-1, self.kernels, self.kernel_dim).transpose(0, 1)  # (B, n, C)
        # cdist with p = 1 never builds the (n, n, B, C) difference tensor, which is slow at batch 256.
        l1 = torch.cdist(m, m, p=1)  # (B, n, n)
        # The sum includes j = i (exp(0) = 1), as the paper's formula and code do.
        return concat_channels(h, torch.exp(-l1).sum(dim=2).transpose(0, 1))


class MinibatchDiscrimination:
    """Appends B minibatch-similarity features before D's head (Salimans et al. 2016)."""

    name = "minibatch-discrimination"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        return check_split(cls.name, setup)

    # tryfirst: change D's structure before other tricks wrap it (spectral norm, conditional).
    @ganbench.hookimpl(tryfirst=True)
    def ganbench_configure_models(self, run: ganbench.Run, models: ganbench.Models) -> None:
        D = models.discriminator
        features = nn.Sequential(*parts(D, self.name)[0])
        # The trunk's output size, from one probe sample (once, at configuration).
        was_training = D.training
        D.eval()
        with torch.no_grad():
            size = features(torch.zeros(1, *run.data.shape, device=run.device)).flatten(1).shape[1]
        D.train(was_training)
        layer = MinibatchDiscriminationLayer(size, self.p.kernels, self.p.kernel_dim)
        models.discriminator = append_features(D, layer, self.p.kernels, self.name).to(run.device)


@ganbench.hookimpl
def ganbench_register_tricks():
    return [MinibatchDiscrimination]
