"""Fault injections for the labelled detector-quality runs: test doubles, not training tricks.

`inject-nan` makes D's loss NaN at a known step; `frozen-generator` replaces G by a constant
image, the total mode collapse a detector must catch. Named in the suites of this folder only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

import ganbench


@dataclass(frozen=True)
class NanParams:
    step: ganbench.NonNegativeInt = 100  # the step whose D loss becomes NaN


class InjectNaN:
    """Test double: adds a NaN to D's loss at one known step."""

    name = "inject-nan"
    params = NanParams

    def __init__(self, params: NanParams) -> None:
        self.p = params

    @ganbench.hookimpl
    def ganbench_discriminator_penalty(self, run: ganbench.Run, step: ganbench.Step) -> Tensor | None:
        if step.index == self.p.step:  # a Python int comparison: no device read
            return torch.full((), float("nan"), device=run.device)
        return None


class ConstantGenerator(nn.Module):
    """The same image for every z; one parameter so that G's optimizer has something to hold."""

    def __init__(self, image: Tensor) -> None:
        super().__init__()
        self.register_buffer("image", image)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, z: Tensor) -> Tensor:
        return (self.image * self.scale).expand(len(z), *self.image.shape)


class FrozenGenerator:
    """Test double: G replaced by a constant output (total mode collapse)."""

    name = "frozen-generator"
    params = None

    @ganbench.hookimpl
    def ganbench_configure_models(self, run: ganbench.Run, models: ganbench.Models) -> None:
        models.generator.eval()  # one sample through BatchNorm in train mode would be flat
        with torch.no_grad():
            image = models.generator(run.hook.ganbench_sample_latent(run=run, n=1))[0]
        models.generator = ConstantGenerator(image).to(run.device)


@ganbench.hookimpl
def ganbench_register_tricks():
    return [InjectNaN, FrozenGenerator]
