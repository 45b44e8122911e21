"""Linear learning-rate decay to zero over the run (as in CycleGAN, Zhu et al. 2017)."""
from dataclasses import dataclass

import ganbench


@dataclass(frozen=True)
class Params:
    start: ganbench.Probability = 0.5  # fraction of the run after which decay begins
    final: ganbench.NonNegativeFloat = 0.0  # learning rate multiplier at the last step


class LinearLrDecay:
    """Holds both learning rates, then decays them linearly to `final` times their start value."""

    name = "my-lr-decay"
    params = Params

    def __init__(self, params: Params):
        self.p = params

    @ganbench.hookimpl
    def ganbench_step_end(self, run, step):
        # The start rates come from the settings, not the optimizers: a run resumed from a
        # checkpoint has decayed optimizers, and nothing here needs saving with it.
        progress = (step.index + 1) / run.settings.steps
        ramp = max(0.0, (progress - self.p.start) / (1 - self.p.start)) if self.p.start < 1 else 0.0
        for opt, base in ((run.optimizers.generator, run.settings.optimizer_g.lr),
                          (run.optimizers.discriminator, run.settings.optimizer_d.lr)):
            for group in opt.param_groups:
                group["lr"] = base * (1 - ramp * (1 - self.p.final))


@ganbench.hookimpl
def ganbench_register_tricks():
    return [LinearLrDecay]
