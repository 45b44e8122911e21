"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training"): the same
kind of differentiable augmentation on real and fake images, for D and for G.

Follows the authors' DiffAugment_pytorch.py: color (brightness ±0.5, saturation ×[0, 2], contrast
×[0.5, 1.5]), translation by up to 1/8 of the side with zero padding, and cutout of a square half
the side, each drawn per sample. Every draw uses `run.rng`; every operation is differentiable in
the images, so G's gradient passes through the augmentation.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import ganbench

POLICIES = ("color", "translation", "cutout")


@dataclass(frozen=True)
class Params:
    policy: str = "color,translation,cutout"  # comma-separated augmentations, applied in this order
    translation: ganbench.Probability = 0.125  # largest shift, as a fraction of the side (the paper: 1/8)
    cutout: ganbench.Probability = 0.5  # side of the cut-out square, as a fraction of the image side


def _uniform(run: ganbench.Run, x: Tensor) -> Tensor:
    """One U[0, 1) value per sample, shaped to broadcast over (C, H, W)."""
    return torch.rand((x.shape[0], 1, 1, 1), generator=run.rng, device=x.device, dtype=x.dtype)


def color(run: ganbench.Run, x: Tensor, p: Params) -> Tensor:
    x = x + (_uniform(run, x) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform(run, x) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(run, x) + 0.5) + mean  # contrast


def translation(run: ganbench.Run, x: Tensor, p: Params) -> Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * p.translation + 0.5), int(w * p.translation + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), generator=run.rng, device=x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=run.rng, device=x.device)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                               torch.arange(w, device=x.device), indexing="ij")
    # Index into a 1-pixel zero border: shifted-in pixels are 0, as in the authors' code.
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[b, gy, gx].permute(0, 3, 1, 2)


def cutout(run: ganbench.Run, x: Tensor, p: Params) -> Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * p.cutout + 0.5), int(w * p.cutout + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=run.rng, device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=run.rng, device=x.device)
    b, gy, gx = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                               torch.arange(cw, device=x.device), indexing="ij")
    gy = torch.clamp(gy + oy - ch // 2, 0, h - 1)
    gx = torch.clamp(gx + ox - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, device=x.device, dtype=x.dtype)
    mask[b, gy, gx] = 0
    return x * mask.unsqueeze(1)


AUGMENTATIONS: dict[str, Callable[[ganbench.Run, Tensor, Params], Tensor]] = {
    "color": color, "translation": translation, "cutout": cutout}


def policy_names(params: Params) -> list[str]:
    return [name.strip() for name in params.policy.split(",") if name.strip()]


class DiffAugment:
    """Differentiable color, translation and cutout on every image D sees, real and fake, in both phases (Zhao et al. 2020)."""

    name = "diff-augment"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params
        self.ops = [AUGMENTATIONS[name] for name in policy_names(params)]

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        unknown = [name for name in policy_names(params) if name not in AUGMENTATIONS]
        if unknown:
            return f'{cls.name}: unknown policy "{unknown[0]}"; allowed: {", ".join(POLICIES)}, comma-separated'
        if setup.data.kind != "image":
            return f'{cls.name} augments images, but the data is "{setup.data.kind}"'
        return None

    def augment(self, run: ganbench.Run, x: Tensor) -> Tensor:
        for op in self.ops:
            x = op(run, x, self.p)
        return x

    @ganbench.hookimpl
    def ganbench_discriminator_inputs(self, run: ganbench.Run, batch: ganbench.Batch) -> None:
        batch.real = self.augment(run, batch.real)
        batch.fake = self.augment(run, batch.fake)


@ganbench.hookimpl
def ganbench_register_tricks():
    return [DiffAugment]
