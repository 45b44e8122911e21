"""The DCGAN of PacGAN's Stacked MNIST table (Lin et al. 2018, Table 2: "DCGAN (their implementation)").

PacGAN's VEEGAN-architecture experiment trains carpedm20's TensorFlow DCGAN, four 5x5 stride-2
layers on each side. The layers here are those of the reference code (fjxmlzn/PacGAN at 190853e,
stacked_MNIST_experiments/VEEGAN_experiment/model.py: `discriminator` lines 287-297, `generator`
299-330, the sizes from `conv_out_size_same`; ops.py: `batch_norm` 29, `conv2d` 52, `deconv2d` 65,
`lrelu` 90, `linear` 93):

- G: z -> linear to an s/16 x s/16 map of 8·`width` channels (s the image side, each halving
  rounded up: 28 -> 14 -> 7 -> 4 -> 2) -> BatchNorm, ReLU -> three 5x5 stride-2 transposed convs
  to s/8, s/4 and s/2, of 4·, 2· and 1·`width` channels, each followed by BatchNorm and ReLU ->
  a 5x5 stride-2 transposed conv to the image's channels at s x s -> tanh.
- D: four 5x5 stride-2 convs of `width`, 2·, 4· and 8·`width` channels, s -> s/2 -> ... -> s/16,
  BatchNorm after all but the first, LeakyReLU 0.2 after each -> a linear map of the last map to
  one logit.

At 28 px and width 64 (the code's gf_dim = df_dim = 64) G has 4.51 M parameters and D 4.31 M.
Packing (the `pack` trick) widens D's first conv to m·3 input channels, as the code's c_dim = 3·m.
Padding is TensorFlow's 'SAME', with the odd row and column after, and weights are drawn as ops.py
draws them: both exactly as `metz-dcgan` (the same helpers, with 5x5 kernels). BatchNorm: the
code's decay 0.9 and eps 1e-5 are torch's defaults; its sampler runs G's BatchNorm in inference
mode, as ganbench's eval does. TensorFlow lays maps out as NHWC, so its reshape and flatten order
the units differently; with i.i.d. initial weights that is the same network up to a permutation.
For square images of at least 16 pixels a side.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

import ganbench
from ganbench_plugins.architectures.metz_dcgan import SameConv, SameConvTranspose, init_as_ops
from ganbench_plugins.architectures.split import SplitSequential

KERNEL = 5
LEAK = 0.2  # lrelu(x, leak=0.2) in ops.py
MIN_SIZE = 16  # four halvings


@dataclass(frozen=True)
class Params:
    width: ganbench.PositiveInt = 64  # channels of D's first conv and G's last hidden map, doubled at each layer inward (the code: 64)


def sides(size: int) -> list[int]:
    """The map sides from the image inward: [s, s/2, s/4, s/8, s/16], each halving rounded up."""
    found = [size]
    for _ in range(4):
        found.append(-(-found[-1] // 2))
    return found


def unsupported(kind: str, shape: tuple[int, ...]) -> str | None:
    """Why pacgan-dcgan cannot model data of this kind and shape, or None when it can."""
    if kind != "image" or len(shape) != 3 or shape[1] != shape[2] or shape[1] < MIN_SIZE:
        return (f"pacgan-dcgan is carpedm20's DCGAN of PacGAN's Stacked MNIST table, for square images of at "
                f"least {MIN_SIZE} pixels a side (C, S, S); the data is {kind} of shape {tuple(shape)}; use dcgan or mlp")
    return None


class PacGANDCGAN:
    """PacGAN's Stacked-MNIST DCGAN (carpedm20's): four 5x5 stride-2 layers each side, 4.5 M + 4.3 M parameters at 28 px."""

    name = "pacgan-dcgan"
    paper = 'Lin et al. 2018, "PacGAN", Table 2 (the VEEGAN-architecture Stacked MNIST experiment)'
    params = Params
    splits_discriminator = True  # D exposes `features` and `head` (see split.py)

    def __init__(self, params: Params) -> None:
        self.p = params

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        data = getattr(setup, "data", None)
        return None if data is None else unsupported(data.kind, data.shape)

    @ganbench.hookimpl
    def ganbench_build_models(self, run: ganbench.Run) -> ganbench.Models:
        reason = unsupported(run.data.kind, run.data.shape)
        if reason is not None:
            raise ganbench.UsageError(reason)
        channels, w = run.data.shape[0], self.p.width
        s = sides(run.data.shape[1])  # [s, s2, s4, s8, s16]
        g_channels = [8 * w, 4 * w, 2 * w, w]
        g_layers: list[nn.Module] = [nn.Linear(run.settings.z_dim, 8 * w * s[4] * s[4]),
                                     nn.Unflatten(1, (8 * w, s[4], s[4])), nn.BatchNorm2d(8 * w), nn.ReLU()]
        for i, (c_in, c_out) in enumerate(zip(g_channels, g_channels[1:])):
            g_layers += [SameConvTranspose(c_in, c_out, s[4 - i], s[3 - i], KERNEL), nn.BatchNorm2d(c_out), nn.ReLU()]
        g_layers += [SameConvTranspose(w, channels, s[1], s[0], KERNEL), nn.Tanh()]
        generator = nn.Sequential(*g_layers)
        d_layers: list[nn.Module] = []
        c_in = channels
        for i, c_out in enumerate((w, 2 * w, 4 * w, 8 * w)):
            d_layers.append(SameConv(c_in, c_out, s[i], 2, KERNEL))
            if i:  # h0 = lrelu(conv2d(image)): no BatchNorm on the first layer
                d_layers.append(nn.BatchNorm2d(c_out))
            d_layers.append(nn.LeakyReLU(LEAK))
            c_in = c_out
        discriminator = SplitSequential(*d_layers, nn.Flatten(1), nn.Linear(8 * w * s[4] * s[4], 1), nn.Flatten(0),
                                        head_size=2)
        init_as_ops(generator)
        init_as_ops(discriminator)
        return ganbench.Models(generator=generator, discriminator=discriminator)


@ganbench.hookimpl
def ganbench_register_architectures():
    return [PacGANDCGAN]
