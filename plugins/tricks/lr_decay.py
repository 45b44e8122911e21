"""Linear learning-rate decay (Gulrajani et al. 2017; Zhu et al. 2017): G's and D's rates fall by the last step.

Gulrajani et al. 2017 train their CIFAR-10 WGAN-GP ResNet this way: `DECAY = True` and
`decay = tf.maximum(0., 1.-(tf.cast(_iteration, tf.float32)/ITERS))`, both Adams at `LR*decay`
(igul222/improved_wgan_training, gan_cifar_resnet.py). Zhu et al. 2017 (CycleGAN, section 7) keep the
rate for the first half and decay it linearly to zero over the second: `start_fraction` = 0.5.

With the decay starting at step s0 = round(start_fraction * steps), the rate of step i (counted from 0)
is the optimizer's configured rate times 1 - (1 - final_scale) * (i - s0) / (steps - s0), clipped to
[final_scale, 1]: the first decayed step keeps the whole rate, and the last one is above the floor by one step's share, as in
Gulrajani et al.'s code. The configured rates are the run's settings (after `ttur`), so the schedule
is a function of the step alone and the trick keeps no state: a resumed run follows it exactly, and
the optimizers' checkpoints carry the rate of the next step. The rates show in the trainer's `lr_g`
and `lr_d` records. Nothing is read from the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import ganbench


@dataclass(frozen=True)
class Params:
    start_fraction: ganbench.Probability = 0.0  # the share of the run's steps at the configured rate before the decay begins
    final_scale: ganbench.Probability = 0.0  # the rate the decay reaches at the last step, as a fraction of the start
    networks: Literal["both", "generator", "discriminator"] = "both"  # whose learning rate decays


class LrDecay:  # stateless: the rate is a function of the step, and the optimizers' checkpoints hold it
    """Decays G's and D's learning rates linearly to `final_scale` of their start by the last step."""

    name = "lr-decay"
    params = Params
    plot = ("lr_g", "lr_d")  # the trainer records both rates; a decay shows as a ramp in the report
    paper = ('Gulrajani et al. 2017, "Improved Training of Wasserstein GANs", code: gan_cifar_resnet.py '
             '(DECAY); Zhu et al. 2017, "Unpaired Image-to-Image Translation" (CycleGAN), section 7')

    def __init__(self, params: Params) -> None:
        self.p = params

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        if round(params.start_fraction * setup.core.steps) >= setup.core.steps:
            return (f"start_fraction = {params.start_fraction} leaves none of the run's {setup.core.steps} steps "
                    "to decay; give a start_fraction below 1")
        if params.networks != "generator" and any(t.name == "d-lr-decay" for t in setup.tricks):
            return ('d-lr-decay also sets D\'s learning rate, and lr-decay would overwrite its cuts every step; '
                    'use one of them, or lr-decay with networks = "generator"')
        return None

    def scale_at(self, index: int, steps: int) -> float:
        """The fraction of the configured rate that step `index` (from 0) of a `steps`-step run trains at."""
        start = round(self.p.start_fraction * steps)
        progress = min(max((index - start) / (steps - start), 0.0), 1.0)
        return 1.0 - (1.0 - self.p.final_scale) * progress

    @ganbench.hookimpl
    def ganbench_step_end(self, run: ganbench.Run, step: ganbench.Step) -> None:
        # The optimizers stepped at step.index's rate; set the next step's (what a checkpoint written
        # after this step holds, so a resumed run goes on at the right rate). The trainer's train
        # records read lr_g and lr_d after this hook, so they show the rate of the next step.
        settings, optimizers = run.settings, run.optimizers
        scale = self.scale_at(step.index + 1, settings.core.steps)
        pairs = {"generator": (optimizers.generator, settings.optimizer_g.lr),
                 "discriminator": (optimizers.discriminator, settings.optimizer_d.lr)}
        for network, (optimizer, start) in pairs.items():
            if self.p.networks in ("both", network):
                for group in optimizer.param_groups:
                    group["lr"] = start * scale


@ganbench.hookimpl
def ganbench_register_tricks():
    return [LrDecay]
