"""Fully connected G and D (Goodfellow et al. 2014, "Generative Adversarial Nets"; the seeds' Keras MLP GAN).

By default LeakyReLU 0.2 after every hidden layer of both networks and dropout 0.3 in D, as in the
Keras MLP GAN the seed notes start from; `activation` and `orthogonal_gain` give Metz et al.'s 2-D
setup (tanh, orthogonal weights at gain 1.4). That seed widens its layers (256 -> 512 -> 1024); here every hidden
layer has the same `width`, so one knob scales the model. Works on 2-D points and flattened images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import annotated_types as at
from torch import nn

import ganbench
from ganbench_plugins.architectures.split import SplitSequential

# nn.Dropout(p=1) zeroes every unit and makes the network constant, so refuse it at validation.
DropoutRate = Annotated[float, at.Interval(ge=0.0, lt=1.0)]


@dataclass(frozen=True)
class Params:
    width: ganbench.PositiveInt = 256  # units in each hidden layer of G and D
    hidden_layers: ganbench.PositiveInt = 3  # hidden layers in each network
    d_dropout: DropoutRate = 0.3  # dropout after each hidden layer of D (Keras seed: 0.3)
    g_dropout: DropoutRate = 0.0  # dropout after each hidden layer of G
    # Metz et al.'s 2-D reference (poolio/unrolled_gan) uses tanh and orthogonal weights, gain 1.4.
    activation: Literal["leaky_relu", "relu", "tanh"] = "leaky_relu"  # after every hidden layer
    orthogonal_gain: ganbench.PositiveFloat | None = None  # orthogonal weights at this gain, zero biases; None: torch's default init


ACTIVATIONS = {"leaky_relu": lambda: nn.LeakyReLU(0.2), "relu": nn.ReLU, "tanh": nn.Tanh}


def _stack(n_in: int, n_out: int, p: Params, dropout: float) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(p.hidden_layers):
        layers += [nn.Linear(n_in if i == 0 else p.width, p.width), ACTIVATIONS[p.activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(p.width, n_out))
    if p.orthogonal_gain is not None:
        for layer in layers:
            if isinstance(layer, nn.Linear):
                nn.init.orthogonal_(layer.weight, gain=p.orthogonal_gain)
                nn.init.zeros_(layer.bias)
    return layers


class MLP:
    """Fully connected G and D with LeakyReLU 0.2 and dropout in D (Goodfellow et al. 2014)."""

    name = "mlp"
    params = Params
    splits_discriminator = True  # D exposes `features` and `head` (see split.py)

    def __init__(self, params: Params):
        self.p = params

    @ganbench.hookimpl
    def ganbench_build_models(self, run: ganbench.Run) -> ganbench.Models:
        shape = tuple(run.data.shape)
        n = math.prod(shape)
        g_layers = _stack(run.settings.z_dim, n, self.p, self.p.g_dropout)
        # Images live in [-1, 1], so tanh; points may not (a ring of radius 2), so no squashing.
        if run.data.kind == "image":
            g_layers.append(nn.Tanh())
        generator = nn.Sequential(*g_layers, nn.Unflatten(1, shape))
        # The final Flatten(0) turns D's (n, 1) into the (n,) logits the losses expect; the last
        # Linear and it are D's head.
        discriminator = SplitSequential(nn.Flatten(1), *_stack(n, 1, self.p, self.p.d_dropout), nn.Flatten(0),
                                        head_size=2)
        return ganbench.Models(generator=generator, discriminator=discriminator)


@ganbench.hookimpl
def ganbench_register_architectures():
    return [MLP]
