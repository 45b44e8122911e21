"""Mode coverage on 2-D Gaussian mixtures (Srivastava et al. 2017, VEEGAN §5.1; Lin et al. 2018, PacGAN).

Protocol: draw 2,500 generated samples; a sample is high quality when it lies within 3 standard
deviations of its nearest mode; a mode is covered when it is the nearest mode of at least one
high-quality sample. Reports the number of covered modes and the fraction of high-quality samples,
both better when higher.

A generator that smears its samples along the ring "covers" every mode at a few percent high
quality (a uniform smear along the circle of ring8 puts about 8% of its samples within 3 std of a
mode). So the metric declares modes covered converged only from a high-quality fraction of
`converged_quality` (0.5: most samples sit on a mode) up (`ganbench.Convergence`); the published
GAN baselines sit at 0.94-0.99 (VEEGAN Table 1; PacGAN Table 1), and the report does not rank on
modes covered while the baseline is below the floor.

`rule` names whose counting is followed, and provenance records it:
- "veegan": VEEGAN §5.1, "within three standard deviations of the nearest mode", measured as the
  Euclidean distance to the nearest mean against `std_multiple` * std.
- "pacgan": PacGAN's reference code (fjxmlzn/PacGAN, synthetic_data_experiments/PacGAN/pacgan/
  extensions.py, MetricLogger.do, lines 154-172): each sample goes to the mode nearest in
  per-dimension standardised distance sqrt(sum(d_i^2 / var_i)), counts when that distance is below
  dis_thre = 3, and a mode is covered when its count is non-zero.
On ring8 and grid25, whose components share one isotropic std, the two rules give the same counts
(tests/test_metrics_modes.py checks it); they part only for components of unequal or per-dimension
spread, which PacGAN's rule measures in each component's own units.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

import ganbench
from ganbench import features

MODES_COVERED = "modes_covered"
HIGH_QUALITY_FRACTION = "high_quality_fraction"
PROTOCOLS = {
    "veegan": ("VEEGAN (Srivastava et al. 2017, §5.1): a generated sample is high quality within "
               "std_multiple·std (Euclidean) of its nearest mode; a mode is covered when it is the nearest "
               "mode of at least min_hits high-quality samples"),
    "pacgan": ("PacGAN reference code (Lin et al. 2018; pacgan/extensions.py MetricLogger, lines 154-172): "
               "a sample goes to the mode nearest in per-dimension standardised distance and is high "
               "quality below std_multiple; a mode is covered with at least min_hits such samples"),
}
RULES = tuple(PROTOCOLS)


@dataclass(frozen=True)
class Params:
    samples: ganbench.PositiveInt = 2500  # generated samples (VEEGAN: 2,500)
    std_multiple: ganbench.PositiveFloat = 3.0  # a sample is high quality within this many std of its nearest mode
    min_hits: ganbench.PositiveInt = 1  # high-quality samples a mode needs to count as covered
    rule: Literal["veegan", "pacgan"] = "veegan"  # whose distance rule (see the module docs)
    # The report reads it; it changes no value, so it is not part of the run id.
    converged_quality: ganbench.Probability = field(default=0.5, metadata=ganbench.REPORT_ONLY)  # modes covered is trusted from this high-quality fraction up
    every: ganbench.PositiveInt = 1  # evaluate at every k-th eval point (the last step always)


class ModeCount(NamedTuple):
    """What `count_modes` finds: covered modes, the high-quality fraction, and hits on each mode."""

    covered: int
    high_quality_fraction: float
    hits_per_mode: Tensor  # (K,) int64: high-quality samples whose nearest mode is each mode


def count_modes(samples: Tensor, modes: Tensor, std: float | Tensor, std_multiple: float = 3.0,
                min_hits: int = 1, rule: str = "veegan") -> ModeCount:
    """Count covered modes and high-quality samples among `samples` (N, D) for `modes` (K, D).

    `std` is one number for every component and dimension, or (K, D) per component and dimension
    (rule "pacgan" only: VEEGAN's rule is stated for one std).
    """
    if rule not in PROTOCOLS:
        raise ValueError(f"unknown counting rule {rule!r}; allowed: {', '.join(RULES)}")
    # float64 on the CPU, so a sample right at the std_multiple boundary is judged by its true
    # distance rather than by float32 rounding; a few thousand 2-D points cost nothing to move.
    x = samples.detach().reshape(len(samples), -1).to("cpu", torch.float64)
    m = modes.detach().reshape(len(modes), -1).to("cpu", torch.float64)
    if x.shape[1] != m.shape[1]:
        raise ValueError(f"samples have {x.shape[1]} dimensions but the modes have {m.shape[1]}")
    spread = torch.as_tensor(std, dtype=torch.float64)
    if rule == "veegan":
        if spread.numel() != 1:
            raise ValueError("VEEGAN's rule is stated for one std shared by every mode; use rule 'pacgan'")
        # cdist's matrix-multiply shortcut (taken for more than 25 rows) computes |x|² + |m|² - 2x·m,
        # which cancels badly for points close to a mode: exactly the distances this metric judges.
        distances = torch.cdist(x, m, compute_mode="donot_use_mm_for_euclid_dist")
        nearest_distance, nearest = distances.min(dim=1)
    else:
        # PacGAN: sqrt(sum over dimensions of d_i^2 / var_i), in each mode's own units.
        diff = x[:, None, :] - m[None, :, :]  # (N, K, D)
        distances = (diff * diff / spread.expand(m.shape) ** 2).sum(-1).sqrt()
        nearest_distance, nearest = distances.min(dim=1)
    # A non-finite sample (a diverged G) has a NaN distance, which fails either test: it counts as
    # low quality instead of raising. PacGAN's code compares strictly (min_dis < dis_thre).
    high_quality = (nearest_distance <= std_multiple * float(spread) if rule == "veegan"
                    else nearest_distance < std_multiple)
    hits = torch.bincount(nearest[high_quality], minlength=len(m))
    covered = int((hits >= min_hits).sum())
    fraction = float(high_quality.double().mean()) if len(x) else 0.0
    return ModeCount(covered, fraction, hits)


class MixtureModes:
    """Modes covered and high-quality fraction on a Gaussian mixture (VEEGAN §5.1)."""

    name = "mixture-modes"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        kind = getattr(getattr(setup, "data", None), "kind", None)
        if kind is not None and kind != "points":
            return (f'it counts generated points near the modes of a Gaussian mixture (ring8, grid25), '
                    f'but this dataset gives kind "{kind}"; use it with a mixture dataset, or pick '
                    f'other metrics (fid, classifier)')
        return None

    @ganbench.hookimpl
    def ganbench_evaluate(self, run: ganbench.Run, step: int, generator: nn.Module) -> ganbench.MetricValues | None:
        if not features.due(run, step, self.p.every):
            return None
        modes, std = getattr(run.data, "modes", None), getattr(run.data, "std", None)
        if modes is None or std is None:
            raise ganbench.UsageError(
                f'metric "mixture-modes" needs a Gaussian-mixture dataset that exposes `modes` and `std` '
                f'(ring8, grid25); dataset "{run.settings.dataset.name}" has no '
                f'{"modes" if modes is None else "std"}')
        samples = features.eval_samples(run, generator, self.p.samples)
        found = count_modes(samples, modes, float(std), self.p.std_multiple, self.p.min_hits, self.p.rule)
        return ganbench.MetricValues(
            metric=self.name,
            values={MODES_COVERED: float(found.covered), HIGH_QUALITY_FRACTION: found.high_quality_fraction},
            better={MODES_COVERED: "max", HIGH_QUALITY_FRACTION: "max"},
            convergence=ganbench.Convergence(
                key=HIGH_QUALITY_FRACTION, at_least=self.p.converged_quality, guards=(MODES_COVERED,),
                why="samples smeared between the modes cover every mode at a low high-quality fraction"),
            provenance={
                "protocol": PROTOCOLS[self.p.rule],
                "rule": self.p.rule,
                "samples": self.p.samples,
                "std_multiple": self.p.std_multiple,
                "min_hits": self.p.min_hits,
                "every": self.p.every,
                "modes_total": len(modes),
                "std": float(std),
            },
        )


@ganbench.hookimpl
def ganbench_register_metrics():
    return [MixtureModes]
