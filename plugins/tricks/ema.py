"""EMA of G's weights (Yazıcı et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training";
Karras et al. 2018): evaluate an exponential moving average of the generator."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import ganbench


@dataclass(frozen=True)
class Params:
    decay: ganbench.Probability = 0.999  # weight kept by the average at each step
    start_step: ganbench.NonNegativeInt = 0  # before this step the copy just tracks G exactly


class EMA:
    """Keeps an exponential moving average of G's weights and evaluates it instead of G."""

    name = "ema"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params
        self.generator: nn.Module | None = None

    # trylast: copy G after any other trick has changed it in place.
    @ganbench.hookimpl(trylast=True)
    def ganbench_configure_models(self, models: ganbench.Models) -> None:
        source = models.generator
        self.generator = copy.deepcopy(source).requires_grad_(False)
        self._avg = list(self.generator.parameters())
        self._src = list(source.parameters())
        self._avg_buf = list(self.generator.buffers())
        self._src_buf = list(source.buffers())

    @ganbench.hookimpl
    def ganbench_step_end(self, step: ganbench.Step) -> None:
        # no_grad: otherwise the in-place update would record autograd history on the copy.
        with torch.no_grad():
            if step.index < self.p.start_step:
                torch._foreach_copy_(self._avg, self._src)
            else:
                torch._foreach_lerp_(self._avg, self._src, 1.0 - self.p.decay)
            # Buffers (BatchNorm running stats, step counters) are not averaged, only copied.
            for avg, src in zip(self._avg_buf, self._src_buf):
                avg.copy_(src)

    @ganbench.hookimpl
    def ganbench_state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.state_dict()}

    @ganbench.hookimpl
    def ganbench_load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])  # in place: the averaging lists stay valid

    @ganbench.hookimpl
    def ganbench_eval_generator(self) -> nn.Module | None:
        return self.generator  # None before configure_models, so the core's G is used


@ganbench.hookimpl
def ganbench_register_tricks():
    return [EMA]
