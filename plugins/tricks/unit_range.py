"""Data in [0, 1] instead of [-1, 1]: the ablation of a DCGAN practice (Radford et al. 2015 scale images to
tanh's range [-1, 1]; ganhacks #1, "normalize the inputs").

D's real inputs are mapped to [0, 1] and G ends in a sigmoid (the trick sets the architecture's
`output = "sigmoid"`). Metrics and sample grids get a [-1, 1] view of the evaluated generator, so
FID and the classifier metrics see images exactly as in any other run.
"""
from __future__ import annotations

from collections.abc import Generator
from typing import Any

from torch import Tensor, nn

import ganbench


class ToSignedRange(nn.Module):
    """2·G(·) − 1: a [0, 1] generator seen in [-1, 1]."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, *args: Tensor) -> Tensor:
        return 2.0 * self.generator(*args) - 1.0


class UnitRange:
    """Trains on images in [0, 1] with a sigmoid G, and evaluates G mapped back to [-1, 1]."""

    name = "unit-range"
    params = None
    transient = ("views",)  # wrappers of the evaluated generator, rebuilt on demand

    def __init__(self) -> None:
        self.views: dict[int, ToSignedRange] = {}

    @classmethod
    def config_defaults(cls, params: None) -> dict[str, Any]:
        return {"architecture.output": "sigmoid"}

    @classmethod
    def check(cls, params: None, setup: Any) -> str | None:
        if setup.data.kind != "image":
            return f'{cls.name} rescales images, but the data is "{setup.data.kind}"'
        if getattr(setup.architecture.params, "output", None) != "sigmoid":
            return (f'{cls.name} needs G to end in a sigmoid, which architecture "{setup.architecture.name}" does not '
                    'offer or was told not to (architecture.output); use dcgan with output = "sigmoid"')
        return None

    # tryfirst: rescale before any other input trick (and before the core's diagnostics copy the
    # batch), so everything downstream sees real and fake in the same [0, 1] range.
    @ganbench.hookimpl(tryfirst=True)
    def ganbench_discriminator_inputs(self, batch: ganbench.Batch) -> None:
        batch.real = (batch.real + 1.0) * 0.5

    # A wrapper around whichever generator is evaluated (the trained G, or EMA's copy).
    @ganbench.hookimpl(wrapper=True)
    def ganbench_eval_generator(self) -> Generator[None, nn.Module, nn.Module]:
        generator = yield
        view = self.views.get(id(generator))
        if view is None or view.generator is not generator:
            view = self.views[id(generator)] = ToSignedRange(generator)
        return view


@ganbench.hookimpl
def ganbench_register_tricks():
    return [UnitRange]
