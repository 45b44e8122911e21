"""The small DCGAN of Metz et al. 2017's Stacked MNIST experiment, with D a fraction of G's size.

Metz et al. ("Unrolled Generative Adversarial Networks", 2017, Table 2) shrink D to 1/4 and 1/2 of
G so that a plain DCGAN drops most of Stacked MNIST's 1,000 modes; PacGAN (Lin et al. 2018, Table 3)
repeats that experiment with its packed D. The layers here are those of PacGAN's reference code
(fjxmlzn/PacGAN at 190853e, stacked_MNIST_experiments/unrolled_GAN_experiment/D=0.25G/model.py,
`generator` lines 286-310 and `discriminator` lines 275-284; D=0.5G/model.py 279-281; ops.py):

- G: z -> linear to a 4x4 map of `g_width` channels -> BatchNorm, ReLU -> three 3x3 stride-2
  transposed convs to 7x7, 14x14 and 28x28, halving the channels (64, 32, 16, 8), each followed by
  BatchNorm and ReLU -> a 3x3 stride-1 conv to the image's channels -> tanh.
- D: three 3x3 stride-2 convs, 28 -> 14 -> 7 -> 4, of `d_width`, 2·`d_width` and 4·`d_width`
  channels (D = 1/4 G: 2, 4, 8; D = 1/2 G: 4, 8, 16), each followed by BatchNorm (the first too)
  and LeakyReLU 0.3 -> a linear map of the 4x4 map to one logit.

Padding is TensorFlow's 'SAME', reproduced exactly: where the padding is odd, the extra row and
column go after (bottom, right), and a transposed conv keeps the same window of its full output
as TensorFlow's. Weights as ops.py draws them: convs from a normal N(0, 0.02²) truncated at two
standard deviations, transposed convs and linear maps from N(0, 0.02²), biases 0, BatchNorm's
scale 1 and shift 0 (decay 0.9 and eps 1e-5 are torch's defaults). TensorFlow lays maps out as
NHWC, so its reshape and flatten order the units differently; with i.i.d. initial weights that is
the same network up to a permutation. For 28-pixel images only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import ganbench
from ganbench_plugins.architectures.split import SplitSequential

SIZE = 28
START = 4  # G's first map side; D's last
LEAK = 0.3  # lrelu(..., leak=0.3) in the code's D


@dataclass(frozen=True)
class Params:
    g_width: ganbench.PositiveInt = 64  # channels of G's 4x4 map, halved at each of its 3 transposed convs (the code: 64)
    d_width: ganbench.PositiveInt = 2  # channels of D's first conv, doubled twice (D = 1/4 G: 2; D = 1/2 G: 4)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after): TensorFlow's 'SAME' padding of one axis, the odd one after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv(nn.Module):
    """A square conv (3x3 here, 5x5 in pacgan-dcgan) with TensorFlow's 'SAME' padding of a `size` x
    `size` map (zero rows and columns, the odd one after)."""

    def __init__(self, c_in: int, c_out: int, size: int, stride: int, kernel: int = 3) -> None:
        super().__init__()
        before, after = _same_padding(size, kernel, stride)
        self.pad = nn.ZeroPad2d((before, after, before, after))
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.pad(x))


class SameConvTranspose(nn.Module):
    """A square stride-2 transposed conv (3x3 here, 5x5 in pacgan-dcgan) to an `out` x `out` map,
    keeping TensorFlow's window.

    TensorFlow's conv2d_transpose with 'SAME' padding is the adjoint of the forward conv that maps
    `out` to `in`; of the full output ((in - 1)·2 + kernel wide) it keeps `out` rows and columns
    starting at that forward conv's leading padding.
    """

    def __init__(self, c_in: int, c_out: int, size_in: int, out: int, kernel: int = 3) -> None:
        super().__init__()
        if -(-out // 2) != size_in:
            raise ValueError(f"a stride-2 'SAME' transposed conv cannot map {size_in} to {out}")
        self.start, self.out = _same_padding(out, kernel, 2)[0], out
        self.conv = nn.ConvTranspose2d(c_in, c_out, kernel, 2, 0)

    def forward(self, x: Tensor) -> Tensor:
        s, n = self.start, self.out
        return self.conv(x)[:, :, s:s + n, s:s + n]


def unsupported(kind: str, shape: tuple[int, ...]) -> str | None:
    """Why metz-dcgan cannot model data of this kind and shape, or None when it can."""
    if kind != "image" or len(shape) != 3 or shape[1:] != (SIZE, SIZE):
        return (f"metz-dcgan is the network of Metz et al.'s Stacked MNIST experiment, for 28x28 images (C, 28, 28); "
                f"the data is {kind} of shape {tuple(shape)}; use dcgan")
    return None


def init_as_ops(module: nn.Module) -> None:
    """Weights as the reference code's ops.py draws them (the module docstring); BatchNorm left at 1 and 0."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.trunc_normal_(layer.weight, 0.0, 0.02, -0.04, 0.04)  # tf.truncated_normal_initializer
            elif isinstance(layer, (nn.ConvTranspose2d, nn.Linear)):
                nn.init.normal_(layer.weight, 0.0, 0.02)
            else:
                continue
            nn.init.zeros_(layer.bias)


class MetzDCGAN:
    """Metz et al. 2017's small Stacked-MNIST DCGAN, D 1/4 (d_width 2) or 1/2 (d_width 4) of G."""

    name = "metz-dcgan"
    paper = ('Metz et al. 2017, "Unrolled Generative Adversarial Networks", Table 2; '
             "Lin et al. 2018 (PacGAN), Table 3")
    params = Params
    splits_discriminator = True  # D exposes `features` and `head` (see split.py)

    def __init__(self, params: Params) -> None:
        self.p = params

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        data = getattr(setup, "data", None)
        if data is None:
            return None
        if params.g_width % 8:
            return f"g_width {params.g_width} must be a multiple of 8: G halves it three times (the code: 64)"
        return unsupported(data.kind, data.shape)

    @ganbench.hookimpl
    def ganbench_build_models(self, run: ganbench.Run) -> ganbench.Models:
        reason = unsupported(run.data.kind, run.data.shape)
        if reason is not None:
            raise ganbench.UsageError(reason)
        channels, g, d = run.data.shape[0], self.p.g_width, self.p.d_width
        generator = nn.Sequential(
            nn.Linear(run.settings.z_dim, g * START * START), nn.Unflatten(1, (g, START, START)),
            nn.BatchNorm2d(g), nn.ReLU(),
            SameConvTranspose(g, g // 2, START, 7), nn.BatchNorm2d(g // 2), nn.ReLU(),
            SameConvTranspose(g // 2, g // 4, 7, 14), nn.BatchNorm2d(g // 4), nn.ReLU(),
            SameConvTranspose(g // 4, g // 8, 14, SIZE), nn.BatchNorm2d(g // 8), nn.ReLU(),
            SameConv(g // 8, channels, SIZE, 1), nn.Tanh())
        d_layers: list[nn.Module] = []
        size, c_in = SIZE, channels
        for c_out in (d, 2 * d, 4 * d):
            d_layers += [SameConv(c_in, c_out, size, 2), nn.BatchNorm2d(c_out), nn.LeakyReLU(LEAK)]
            size, c_in = -(-size // 2), c_out
        discriminator = SplitSequential(*d_layers, nn.Flatten(1), nn.Linear(4 * d * START * START, 1), nn.Flatten(0),
                                        head_size=2)
        init_as_ops(generator)
        init_as_ops(discriminator)
        return ganbench.Models(generator=generator, discriminator=discriminator)


@ganbench.hookimpl
def ganbench_register_architectures():
    return [MetzDCGAN]
