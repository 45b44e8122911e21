"""Progressive growing (Karras et al. 2018, "Progressive Growing of GANs for Improved Quality, Stability,
and Variation", §2) for the DCGAN family: G and D start at the smallest map and grow, with fade-in.

Levels are DCGAN's resolutions: 7 → 14 → 28 for 28 px, 4 → 8 → 16 → 32 (→ 64). The run is split
into phases of `phase_steps` steps: stable at the first level, then for each further level a
fade-in (alpha rising linearly from 0 to 1) and a stable phase; the last level holds to the end.
Each level has its own toRGB / fromRGB 1×1 convolution. While a level fades in, G's image is
alpha · new + (1 − alpha) · upsampled previous, and D blends its new block with the previous
level's fromRGB on the average-pooled input, as in the paper. Real images are downsampled to the
current resolution (and blended the same way during a fade) in `ganbench_discriminator_inputs`.

G always returns full-resolution images: its current output, upsampled (nearest), so sample
grids, metrics and every trick see images of the dataset's size. Average-pooling them back is
exact, so D sees G's native output. The schedule advances in `ganbench_step_end`. Simplified from
the paper: DCGAN blocks (one strided conv each, BatchNorm in G by default) rather than ProGAN's
two 3×3 convs with pixel norm and equalised learning rate; add the minibatch-std trick for its
minibatch standard deviation layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn

import ganbench
from ganbench_plugins.architectures.dcgan import _init_normal, _norm, checked_geometry, unsupported


@dataclass(frozen=True)
class Params:
    width: ganbench.PositiveInt = 64  # channels at full resolution, doubled at each halving towards the smallest map
    d_norm: Literal["none", "layer", "batch"] = "none"  # norm in D's blocks (ProGAN's D has none)
    g_norm: Literal["batch", "none"] = "batch"  # norm in G's blocks
    init: Literal["normal-0.02", "default"] = "normal-0.02"  # DCGAN's N(0, 0.02) weights, or PyTorch's
    phase_steps: ganbench.PositiveInt | None = None  # steps of each stable and fade-in phase; unset: the run split evenly


class Schedule:
    """The current level (0 = smallest map) and fade-in alpha, shared by G, D and any copy of G."""

    def __init__(self, levels: int, phase_steps: int) -> None:
        self.levels, self.phase_steps = levels, phase_steps
        self.level, self.alpha = 0, 1.0

    def __deepcopy__(self, memo: dict) -> Schedule:
        return self  # a copy of G (EMA) follows the same schedule as the trained G

    def at(self, index: int) -> tuple[int, float]:
        """(level, alpha) at generator step `index`: Python numbers, so no device read."""
        phase = index // self.phase_steps
        if phase >= 2 * self.levels - 2:
            return self.levels - 1, 1.0
        level = (phase + 1) // 2
        alpha = (index - phase * self.phase_steps) / self.phase_steps if phase % 2 == 1 else 1.0
        return level, alpha

    def set(self, index: int) -> None:
        self.level, self.alpha = self.at(index)

    @property
    def fading(self) -> bool:
        return self.level > 0 and self.alpha < 1.0


class ProgressiveGenerator(nn.Module):
    def __init__(self, stem: nn.Module, blocks: nn.ModuleList, to_rgb: nn.ModuleList, schedule: Schedule) -> None:
        super().__init__()
        self.stem, self.blocks, self.to_rgb, self.schedule = stem, blocks, to_rgb, schedule

    def forward(self, z: Tensor) -> Tensor:
        s = self.schedule
        h = self.stem(z)
        previous = h
        for block in self.blocks[: s.level]:
            previous, h = h, block(h)
        x = self.to_rgb[s.level](h).tanh()
        if s.fading:
            low = F.interpolate(self.to_rgb[s.level - 1](previous).tanh(), scale_factor=2, mode="nearest")
            x = s.alpha * x + (1 - s.alpha) * low
        factor = 2 ** (s.levels - 1 - s.level)
        return x if factor == 1 else F.interpolate(x, scale_factor=factor, mode="nearest")


class ProgressiveTrunk(nn.Module):
    """D's features: fromRGB at the current level, then the blocks down to the smallest map."""

    def __init__(self, from_rgb: nn.ModuleList, blocks: nn.ModuleList, schedule: Schedule, start: int) -> None:
        super().__init__()
        self.from_rgb, self.blocks, self.schedule, self.start = from_rgb, blocks, schedule, start

    def forward(self, x: Tensor) -> Tensor:
        s = self.schedule
        side = self.start * 2**s.level
        if x.shape[-1] != side:  # full-resolution input (a penalty, a probe): pool it down
            x = F.avg_pool2d(x, x.shape[-1] // side)
        h = self.from_rgb[s.level](x)
        if s.level > 0:
            h = self.blocks[s.level - 1](h)
            if s.fading:
                h = s.alpha * h + (1 - s.alpha) * self.from_rgb[s.level - 1](F.avg_pool2d(x, 2))
            for block in reversed(self.blocks[: s.level - 1]):
                h = block(h)
        return h


class ProgressiveDiscriminator(nn.Module):
    def __init__(self, features: ProgressiveTrunk, head: nn.Module) -> None:
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class ProgressiveDCGAN:
    """DCGAN blocks grown from the smallest map to full size with fade-in (Karras et al. 2018)."""

    name = "progressive-dcgan"
    params = Params
    splits_discriminator = True  # D exposes `features` and `head` (see split.py)

    def __init__(self, params: Params) -> None:
        self.p = params
        self.schedule: Schedule | None = None
        self.size = 0

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        return unsupported(setup.data.kind, setup.data.shape)

    @ganbench.hookimpl
    def ganbench_build_models(self, run: ganbench.Run) -> ganbench.Models:
        p = self.p
        channels, self.size, start, n_up = checked_geometry(run.data)
        levels = n_up + 1
        phase_steps = p.phase_steps or max(1, run.settings.steps // (2 * levels - 1))
        self.schedule = Schedule(levels, phase_steps)
        self.schedule.set(0)
        width = [p.width * 2 ** (levels - 1 - level) for level in range(levels)]  # channels at each level
        g_bias, d_bias = p.g_norm == "none", p.d_norm == "none"

        def g_block(conv: nn.Module, c: int) -> nn.Sequential:
            norm = _norm(p.g_norm, c)
            return nn.Sequential(conv, *([norm] if norm else []), nn.ReLU())

        def d_block(conv: nn.Module, c: int) -> nn.Sequential:
            norm = _norm(p.d_norm, c)
            return nn.Sequential(conv, *([norm] if norm else []), nn.LeakyReLU(0.2))

        stem = nn.Sequential(nn.Unflatten(1, (run.settings.z_dim, 1, 1)),
                             *g_block(nn.ConvTranspose2d(run.settings.z_dim, width[0], start, 1, 0, bias=g_bias), width[0]))
        g_blocks = nn.ModuleList(g_block(nn.ConvTranspose2d(width[i - 1], width[i], 4, 2, 1, bias=g_bias), width[i])
                                 for i in range(1, levels))
        to_rgb = nn.ModuleList(nn.Conv2d(width[i], channels, 1) for i in range(levels))
        generator = ProgressiveGenerator(stem, g_blocks, to_rgb, self.schedule)

        from_rgb = nn.ModuleList(nn.Sequential(nn.Conv2d(channels, width[i], 1), nn.LeakyReLU(0.2))
                                 for i in range(levels))
        # d_blocks[i - 1] halves level i's map to level i - 1's.
        d_blocks = nn.ModuleList(d_block(nn.Conv2d(width[i], width[i - 1], 4, 2, 1, bias=d_bias), width[i - 1])
                                 for i in range(1, levels))
        head = nn.Sequential(nn.Conv2d(width[0], 1, start, 1, 0), nn.Flatten(0))
        discriminator = ProgressiveDiscriminator(ProgressiveTrunk(from_rgb, d_blocks, self.schedule, start), head)
        if p.init == "normal-0.02":
            generator.apply(_init_normal)
            discriminator.apply(_init_normal)
        return ganbench.Models(generator=generator, discriminator=discriminator)

    @ganbench.hookimpl
    def ganbench_discriminator_inputs(self, batch: ganbench.Batch) -> None:
        s = self.schedule
        factor = self.size // (self.size >> (s.levels - 1 - s.level))
        if factor > 1:
            batch.fake = F.avg_pool2d(batch.fake, factor)  # undoes G's nearest upsampling exactly
            batch.real = F.avg_pool2d(batch.real, factor)
        if s.fading:  # real images fade in like G's: the previous level's, upsampled, blended in
            low = F.interpolate(F.avg_pool2d(batch.real, 2), scale_factor=2, mode="nearest")
            batch.real = s.alpha * batch.real + (1 - s.alpha) * low

    @ganbench.hookimpl
    def ganbench_step_end(self, step: ganbench.Step) -> None:
        self.schedule.set(step.index + 1)

    @ganbench.hookimpl
    def ganbench_state_dict(self) -> dict[str, Any]:
        return {"level": self.schedule.level, "alpha": self.schedule.alpha}

    @ganbench.hookimpl
    def ganbench_load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.level, self.schedule.alpha = state["level"], state["alpha"]

    @ganbench.hookimpl
    def ganbench_log_record(self, step: int, record: dict[str, Any]) -> None:
        # The schedule of the interval's last step (`step` steps are done; it was index step - 1).
        level, alpha = self.schedule.at(step - 1)
        record["resolution"] = self.size >> (self.schedule.levels - 1 - level)
        record["fade_alpha"] = alpha


@ganbench.hookimpl
def ganbench_register_architectures():
    return [ProgressiveDCGAN]
