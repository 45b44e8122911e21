"""Simultaneous updates: G's step is taken against D as it was before this step's D update, so both
networks move from the same point, as in simultaneous gradient descent.

ganbench's loop alternates: D updates, then G updates against the updated D. Many reference codes
instead compute both updates from one graph and apply them together: Metz et al.'s unrolled-GAN
notebook (poolio/unrolled_gan, `sess.run([..., g_train_op, d_train_op])`) and ALI's and PacGAN's
Blocks `ali_algorithm`. The two orders are different dynamics: on the bilinear game simultaneous
gradient steps spiral outwards while alternating ones stay bounded (Mescheder et al. 2017, "The
Numerics of GANs"; Gidel et al. 2019, "Negative Momentum for Improved Game Dynamics"), so a
reproduction needs the order its paper used.

How: before the last D update of a step (the one whose fake batch G reuses), the trick copies D's
weights and buffers; G's first update scores its fake batch with that copy (torch.func.
functional_call) and the run's loss turns those scores into G's loss. D's own weights and
optimizer are untouched. Further G updates of the same step (g_updates > 1) see the updated D, as
without the trick. Not combinable with `unrolled`, whose look-ahead starts from the live D.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

import ganbench


class Simultaneous:
    """G steps against D from before this step's D update (simultaneous gradient descent)."""

    name = "simultaneous"
    params = None
    transient = ("before", "_inside")  # the copy lives within one step: a checkpoint needs none of it

    def __init__(self, params: None = None) -> None:
        self.before: dict[str, Tensor] | None = None
        self._inside = False

    @classmethod
    def check(cls, params: None, setup: Any) -> str | None:
        if any(t.name == "unrolled" for t in getattr(setup, "tricks", ())):
            return "unrolled looks ahead from the live D, so the two cannot be combined; use one of them"
        return None

    @ganbench.hookimpl
    def ganbench_discriminator_inputs(self, run: ganbench.Run, step: ganbench.Step, batch: ganbench.Batch) -> None:
        if step.phase == "d" and step.update == run.updates.d - 1:
            D = run.models.discriminator
            self.before = {name: t.detach().clone() for name, t in (*D.named_parameters(), *D.named_buffers())}

    @ganbench.hookimpl(tryfirst=True)
    def ganbench_generator_loss(self, run: ganbench.Run, step: ganbench.Step, batch: ganbench.Batch,
                                scores: ganbench.Scores) -> Tensor | None:
        if self._inside or step.update > 0 or self.before is None:
            return None  # the call below, or a later G update: the run's loss on the live D
        args = (batch.fake,) if batch.fake_labels is None else (batch.fake, batch.fake_labels)
        D = run.models.discriminator
        # Copies of the buffers, so this forward pass moves no BatchNorm or spectral-norm state.
        weights = {name: t if name in dict(D.named_parameters()) else t.clone() for name, t in self.before.items()}
        with torch.enable_grad():
            earlier = ganbench.Scores(real=None, fake=functional_call(D, weights, args))
        self._inside = True
        try:
            return run.hook.ganbench_generator_loss(run=run, step=step, batch=batch, scores=earlier)
        finally:
            self._inside = False


@ganbench.hookimpl
def ganbench_register_tricks():
    return [Simultaneous]
