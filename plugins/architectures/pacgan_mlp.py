"""The 2-D networks of PacGAN's and VEEGAN's mixture experiments (Lin et al. 2018, Srivastava et al. 2017).

From PacGAN's reference code (fjxmlzn/PacGAN, synthetic_data_experiments/2DRing_GAN&PacGAN/
pacgan_task.py, `create_model_brick`, and config.py): G has 4 hidden layers of 400 units, each
BatchNorm then ReLU, no biases in the hidden layers and a linear output with a bias; D has 3
maxout layers of 200 units with 5 pieces each, then a linear output. Weights are drawn from
N(0, 0.02²) and biases start at 0 (`weights_init_std`, `biases_init`). For points only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import ganbench
from ganbench_plugins.architectures.split import SplitSequential


@dataclass(frozen=True)
class Params:
    g_width: ganbench.PositiveInt = 400  # units in each hidden layer of G (PacGAN: 400)
    g_layers: ganbench.PositiveInt = 4  # hidden layers of G (PacGAN: 4)
    d_width: ganbench.PositiveInt = 200  # maxout units in each hidden layer of D (PacGAN: 200)
    d_layers: ganbench.PositiveInt = 3  # maxout layers of D (PacGAN: 3)
    pieces: ganbench.PositiveInt = 5  # linear pieces per maxout unit (PacGAN: 5)
    init_std: ganbench.PositiveFloat = 0.02  # std of the normal initial weights (PacGAN: 0.02)


class Maxout(nn.Module):
    """A linear map to `units` × `pieces` outputs, then the maximum over each unit's pieces
    (Goodfellow et al. 2013; Blocks' LinearMaxout)."""

    def __init__(self, n_in: int, units: int, pieces: int) -> None:
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(n_in, units * pieces)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).view(len(x), self.units, self.pieces).amax(dim=2)


def _init(module: nn.Module, std: float) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class PacganMlp:
    """PacGAN's 2-D networks: a BatchNorm-ReLU G of 4 × 400 and a maxout D of 3 × 200 × 5 pieces."""

    name = "pacgan-mlp"
    params = Params
    splits_discriminator = True  # D exposes `features` and `head` (see split.py)

    def __init__(self, params: Params) -> None:
        self.p = params

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        kind = getattr(getattr(setup, "data", None), "kind", None)
        if kind is not None and kind != "points":
            return f'it is the network of PacGAN\'s 2-D experiments, for points; this dataset gives kind "{kind}"; use mlp or dcgan'
        return None

    @ganbench.hookimpl
    def ganbench_build_models(self, run: ganbench.Run) -> ganbench.Models:
        p = self.p
        n = math.prod(tuple(run.data.shape))
        g_layers: list[nn.Module] = []
        for i in range(p.g_layers):
            g_layers += [nn.Linear(run.settings.z_dim if i == 0 else p.g_width, p.g_width, bias=False),
                         nn.BatchNorm1d(p.g_width), nn.ReLU()]
        generator = nn.Sequential(*g_layers, nn.Linear(p.g_width, n), nn.Unflatten(1, tuple(run.data.shape)))
        d_layers: list[nn.Module] = [nn.Flatten(1)]
        for i in range(p.d_layers):
            d_layers.append(Maxout(n if i == 0 else p.d_width, p.d_width, p.pieces))
        discriminator = SplitSequential(*d_layers, nn.Linear(p.d_width, 1), nn.Flatten(0), head_size=2)
        with torch.no_grad():
            _init(generator, p.init_std)
            _init(discriminator, p.init_std)
        return ganbench.Models(generator=generator, discriminator=discriminator)


@ganbench.hookimpl
def ganbench_register_architectures():
    return [PacganMlp]
