"""2-D Gaussian mixtures for mode-collapse studies: the ring of 8 and the 5×5 grid, as in
Metz et al. 2017 (Unrolled GAN), Srivastava et al. 2017 (VEEGAN) and Lin et al. 2018 (PacGAN)."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor

import ganbench

RING_MODES = 8
GRID_SIDE = 5


class MixtureData(ganbench.Data):
    """An equal-weight mixture of isotropic Gaussians, sampled afresh on the device for every batch.

    `modes` (K, D) and `std` stay public: mode-coverage metrics count a sample as a hit on its
    nearest mode when it lies within a few `std` of it. Labels are mode indices.
    """

    def __init__(self, modes: Tensor, std: float) -> None:
        self.modes = modes
        self.std = std
        self.device = modes.device
        self.kind = "points"
        self.shape = (modes.shape[1],)
        self.num_classes = modes.shape[0]

    def sample(self, n: int, rng: torch.Generator) -> tuple[Tensor, Tensor]:
        device = self.modes.device
        labels = torch.randint(len(self.modes), (n,), generator=rng, device=device)
        noise = torch.randn((n, *self.shape), generator=rng, device=device)
        return self.modes[labels] + self.std * noise, labels

    def content_hash(self) -> str:
        # The data is defined by its parameters, not by any stored samples.
        h = hashlib.sha256(b"gaussian-mixture")
        h.update(self.modes.detach().cpu().double().contiguous().numpy().tobytes())
        h.update(repr(float(self.std)).encode())
        return h.hexdigest()


def ring_modes(count: int, radius: float) -> Tensor:
    """`count` points evenly spaced on a circle, the first on the positive x axis."""
    angles = torch.arange(count, dtype=torch.float64) * (2 * math.pi / count)
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def grid_modes(side: int, spacing: float) -> Tensor:
    """A side × side grid centred on the origin, row by row."""
    coords = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * spacing
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=1).float()


@dataclass(frozen=True)
class RingParams:
    radius: ganbench.PositiveFloat = 2.0  # radius of the circle the modes sit on
    std: ganbench.PositiveFloat = 0.02  # standard deviation of each mode


class Ring8:
    """8 Gaussians evenly spaced on a circle of radius 2, std 0.02 (Metz et al. 2017)."""

    name = "ring8"
    params = RingParams

    def __init__(self, params: RingParams) -> None:
        self.p = params

    def info(self) -> ganbench.DataInfo:
        return ganbench.DataInfo("points", (2,), RING_MODES)

    def load(self, device: torch.device | str) -> MixtureData:
        return MixtureData(ring_modes(RING_MODES, self.p.radius).to(device), self.p.std)


@dataclass(frozen=True)
class GridParams:
    spacing: ganbench.PositiveFloat = 2.0  # distance between neighbouring modes
    std: ganbench.PositiveFloat = 0.05  # standard deviation of each mode


class Grid25:
    """25 Gaussians on a 5×5 grid at {-4, -2, 0, 2, 4}², std 0.05 (Srivastava et al. 2017)."""

    name = "grid25"
    params = GridParams

    def __init__(self, params: GridParams) -> None:
        self.p = params

    def info(self) -> ganbench.DataInfo:
        return ganbench.DataInfo("points", (2,), GRID_SIDE**2)

    def load(self, device: torch.device | str) -> MixtureData:
        return MixtureData(grid_modes(GRID_SIDE, self.p.spacing).to(device), self.p.std)


@ganbench.hookimpl
def ganbench_register_datasets():
    return [Ring8, Grid25]
