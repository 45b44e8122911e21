"""Uniform latents, z ~ U[low, high]^z_dim, default U[-1, 1] as in DCGAN (Radford et al. 2015, §4)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import ganbench


@dataclass(frozen=True)
class Params:
    low: float = -1.0  # lower bound of every latent coordinate
    high: float = 1.0  # upper bound of every latent coordinate (must exceed low)


class Uniform:
    """z ~ U[low, high] per coordinate, U[-1, 1] by default (Radford et al. 2015)."""

    name = "uniform"
    params = Params

    def __init__(self, params: Params):
        self.p = params

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        if params.low >= params.high:
            return f"uniform latent needs low < high; got low = {params.low!r}, high = {params.high!r}"
        return None

    @ganbench.hookimpl
    def ganbench_sample_latent(self, run: ganbench.Run, n: int) -> Tensor:
        z = torch.rand(n, run.settings.z_dim, generator=run.rng, device=run.device)
        return z * (self.p.high - self.p.low) + self.p.low


@ganbench.hookimpl
def ganbench_register_latents():
    return [Uniform]
