"""DCGAN (Radford et al. 2015, "Unsupervised Representation Learning with Deep Convolutional GANs").

Strided convolutions down in D, transposed convolutions up in G, BatchNorm, ReLU in G and
LeakyReLU 0.2 in D, tanh output and N(0, 0.02) weights, for square images of 28, 32 or 64 pixels.
G starts from a `start` x `start` map (7 for 28 pixels, 4 otherwise) and doubles it `n_up` times;
D mirrors G. Channels double at each step towards the small map, from `width` at the large end
(from `d_width` in D when it is set: Metz et al. 2017 shrink D to make a DCGAN drop modes).

Ablation knobs for the paper's practices: D's activation (`d_activation`), the norms (`d_norm`,
`g_norm`), pooling instead of strided convolutions (`resampling = "pool"`: 3x3 conv then 2x2
average pooling in D, nearest upsampling then a 3x3 conv in G), the init, and G's output
(`output = "sigmoid"` for data in [0, 1], which the unit-range trick sets). D is a
`SplitSequential`: its last conv and flatten are the head, the rest its features.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

import ganbench
from ganbench_plugins.architectures.split import SplitSequential

SIZES = (28, 32, 64)


@dataclass(frozen=True)
class Params:
    width: ganbench.PositiveInt = 64  # channels at full resolution (D's first conv), doubled at each stride-2 step
    d_width: ganbench.PositiveInt | None = field(default=None, metadata=ganbench.ADDED_LATER)  # D's own channels at full resolution, when D should be narrower than G (Metz et al. 2017 shrink D to 1/4); unset: width
    d_norm: Literal["batch", "layer", "none"] = "batch"  # "layer" is GroupNorm(1, c), per sample (WGAN-GP critics)
    g_norm: Literal["batch", "none"] = "batch"  # norm after each hidden layer of G
    init: Literal["normal-0.02", "default"] = "normal-0.02"  # the paper's N(0, 0.02) weights, or PyTorch's
    d_activation: Literal["leaky-relu", "relu"] = "leaky-relu"  # D's activation (the paper: LeakyReLU 0.2)
    resampling: Literal["strided", "pool"] = "strided"  # strided (transposed) convs, or avg-pool in D and upsample + conv in G
    output: Literal["tanh", "sigmoid"] = "tanh"  # G's output: tanh for data in [-1, 1], sigmoid for [0, 1] (unit-range trick)


def unsupported(kind: str, shape: tuple[int, ...]) -> str | None:
    """Why dcgan cannot model data of this kind and shape, or None when it can."""
    allowed = "square images (C, H, H) with H in 28, 32, 64"
    if kind != "image":
        return f"dcgan needs {allowed}; the data is {kind} of shape {tuple(shape)}"
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] not in SIZES:
        return f"dcgan needs {allowed}; the data has shape {tuple(shape)}; use the mlp architecture"
    return None


def checked_geometry(data: Any) -> tuple[int, int, int, int]:
    """(channels, size, start, n_up) of the data; its one-line error when dcgan cannot model it."""
    reason = unsupported(data.kind, data.shape)
    if reason is not None:
        raise ganbench.UsageError(reason)
    channels, size, _ = data.shape
    return (channels, size, *_geometry(size))


def _geometry(size: int) -> tuple[int, int]:
    """(start, n_up): G's first map side and how many stride-2 layers reach `size`."""
    start = 7 if size == 28 else 4
    return start, int(math.log2(size // start))


def _norm(kind: str, channels: int) -> nn.Module | None:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        # GroupNorm with one group normalises each sample on its own, so per-sample gradient
        # penalties stay per-sample (Gulrajani et al. 2017 §4 recommend layer norm for the critic).
        return nn.GroupNorm(1, channels)
    return None


def _block(conv: nn.Module | list[nn.Module], norm: nn.Module | None, act: nn.Module) -> list[nn.Module]:
    convs = conv if isinstance(conv, list) else [conv]
    return [*convs, act] if norm is None else [*convs, norm, act]


def _down(c_in: int, c_out: int, resampling: str, bias: bool) -> list[nn.Module]:
    """Halve the map: a 4x4 stride-2 conv, or a 3x3 stride-1 conv then 2x2 average pooling."""
    if resampling == "strided":
        return [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=bias)]
    return [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias), nn.AvgPool2d(2)]


def _up(c_in: int, c_out: int, resampling: str, bias: bool) -> list[nn.Module]:
    """Double the map: a 4x4 stride-2 transposed conv, or nearest upsampling then a 3x3 conv."""
    if resampling == "strided":
        return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias)]
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias)]


def _d_act(kind: str) -> nn.Module:
    return nn.LeakyReLU(0.2) if kind == "leaky-relu" else nn.ReLU()


def _init_normal(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGAN:
    """Convolutional G and D with BatchNorm and strided convs, for 28, 32 and 64 px images (Radford et al. 2015)."""

    name = "dcgan"
    params = Params
    splits_discriminator = True  # D exposes `features` and `head` (see split.py)

    def __init__(self, params: Params):
        self.p = params

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        return unsupported(setup.data.kind, setup.data.shape)

    @ganbench.hookimpl
    def ganbench_build_models(self, run: ganbench.Run) -> ganbench.Models:
        channels, size, start, n_up = checked_geometry(run.data)
        widths = [self.p.width * 2**i for i in range(n_up)]  # widths[0] at the large end
        d_widths = [(self.p.d_width or self.p.width) * 2**i for i in range(n_up)]
        # A norm's shift makes a conv bias redundant, so convs followed by a norm have none.
        g_bias, d_bias = self.p.g_norm == "none", self.p.d_norm == "none"

        p = self.p
        g: list[nn.Module] = [nn.Unflatten(1, (run.settings.z_dim, 1, 1))]
        g += _block(nn.ConvTranspose2d(run.settings.z_dim, widths[-1], start, 1, 0, bias=g_bias),
                    _norm(p.g_norm, widths[-1]), nn.ReLU())
        for i in reversed(range(1, n_up)):
            g += _block(_up(widths[i], widths[i - 1], p.resampling, g_bias), _norm(p.g_norm, widths[i - 1]), nn.ReLU())
        g += [*_up(widths[0], channels, p.resampling, True), nn.Tanh() if p.output == "tanh" else nn.Sigmoid()]

        # The paper puts no norm on D's first layer (nor on G's output).
        d: list[nn.Module] = [*_down(channels, d_widths[0], p.resampling, True), _d_act(p.d_activation)]
        for i in range(1, n_up):
            d += _block(_down(d_widths[i - 1], d_widths[i], p.resampling, d_bias), _norm(p.d_norm, d_widths[i]),
                        _d_act(p.d_activation))
        d += [nn.Conv2d(d_widths[-1], 1, start, 1, 0), nn.Flatten(0)]  # the head: (n, 1, 1, 1) -> (n,) logits

        generator, discriminator = nn.Sequential(*g), SplitSequential(*d, head_size=2)
        if self.p.init == "normal-0.02":
            generator.apply(_init_normal)
            discriminator.apply(_init_normal)
        return ganbench.Models(generator=generator, discriminator=discriminator)


@ganbench.hookimpl
def ganbench_register_architectures():
    return [DCGAN]
