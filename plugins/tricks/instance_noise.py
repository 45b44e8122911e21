"""Instance noise (Sønderby et al. 2016; Arjovsky & Bottou 2017): annealed Gaussian noise on D's inputs."""
from __future__ import annotations

from dataclasses import dataclass

import torch

import ganbench


@dataclass(frozen=True)
class Params:
    sigma: ganbench.PositiveFloat = 0.1  # starting noise std, in data units
    anneal_steps: ganbench.PositiveInt | None = None  # steps of linear decay to 0; unset: the whole run


class InstanceNoise:
    """Adds Gaussian noise to real and fake inputs of D, its std annealed linearly to 0."""

    name = "instance-noise"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    def sigma(self, run: ganbench.Run, index: int) -> float:
        """The noise std at generator step `index`: a Python float, so no device read."""
        steps = self.p.anneal_steps or run.settings.steps
        return self.p.sigma * max(0.0, 1.0 - index / steps)

    @staticmethod
    def _noise(run: ganbench.Run, x: torch.Tensor) -> torch.Tensor:
        # Not randn_like: only run.rng makes the noise reproduce from the run's seed.
        return torch.randn(x.shape, generator=run.rng, device=x.device, dtype=x.dtype)

    @ganbench.hookimpl
    def ganbench_discriminator_inputs(
        self, run: ganbench.Run, step: ganbench.Step, batch: ganbench.Batch
    ) -> None:
        # Both phases: G must be trained against the same smoothed D that the D phase fits.
        sigma = self.sigma(run, step.index)
        if sigma == 0.0:
            return
        batch.real = batch.real + sigma * self._noise(run, batch.real)
        batch.fake = batch.fake + sigma * self._noise(run, batch.fake)


@ganbench.hookimpl
def ganbench_register_tricks():
    return [InstanceNoise]
