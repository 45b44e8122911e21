"""Precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020) on
k-nearest-neighbour balls in a feature space.

Each real sample gets a ball reaching its k-th nearest real neighbour, each generated sample one
reaching its k-th nearest generated neighbour (the sample itself not counted):
- precision: the share of generated samples inside some real ball (fidelity);
- recall: the share of real samples inside some generated ball (diversity: a generator that drops
  modes leaves their real samples outside every generated ball, so recall falls as it collapses);
- density: how many real balls hold each generated sample, over k, averaged (can exceed 1);
- coverage: the share of real samples whose ball holds some generated sample.

Precision and recall are torch-fidelity's (`metric_prc.calculate_precision_recall_part`: a sample
counts when its distance is <= the radius), as in Kynkäänniemi et al.'s reference code. Density and
coverage follow Naeem et al.'s reference code (clovaai/generative-evaluation-prdc, prdc/prdc.py,
`compute_prdc`: strictly < the radius). Distances are Euclidean in float64. The papers use k = 3
(precision, recall) and k = 5 (density, coverage); so do the defaults.

Spaces (`ganbench.features`): "inception" (2,048-d pool features, as both papers; slow on a CPU),
"classifier" (the data classifier's 128-d features; cheap), "pixels" (raw samples; for 2-D mixtures
the coordinates). "auto" takes inception for images and pixels for points.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

import ganbench
from ganbench import features

PRECISION = "precision"
RECALL = "recall"
DENSITY = "density"
COVERAGE = "coverage"
# Density has no better direction: above 1, generated samples crowd where real ones are dense,
# which Naeem et al. read as neither better nor worse; it is recorded, not ranked.
BETTER = {PRECISION: "max", RECALL: "max", COVERAGE: "max"}
CHUNK = 2048  # rows of a distance matrix held at once
RULE = ("k-NN balls in the feature space, Euclidean, float64; precision/recall: torch-fidelity "
        "metric_prc (inside a ball: distance <= radius; Kynkäänniemi et al. 2019); density/coverage: "
        "Naeem et al. 2020's compute_prdc (distance < radius)")


@dataclass(frozen=True)
class Params:
    space: Literal["auto", "inception", "classifier", "pixels"] = "auto"  # feature space; auto: inception for images, pixels for points
    k: ganbench.PositiveInt = 3  # neighbour defining the balls for precision and recall (Kynkäänniemi et al.: 3)
    k_coverage: ganbench.PositiveInt = 5  # the same for density and coverage (Naeem et al.: 5)
    samples: ganbench.NonNegativeInt = 0  # generated samples; 0 = eval_samples
    real: ganbench.NonNegativeInt = 0  # real samples; 0 = real_samples
    every: ganbench.PositiveInt = 1  # evaluate at every k-th eval point (the last step always)


def resolved_space(space: str, kind: str) -> str:
    if space != "auto":
        return space
    return "inception" if kind == "image" else "pixels"


def _kth_radii(x: Tensor, k: int) -> Tensor:
    """Distance from each row of `x` to its k-th nearest other row."""
    radii = [torch.cdist(chunk, x).kthvalue(k + 1, dim=1).values for chunk in x.split(CHUNK)]
    return torch.cat(radii)


def density_coverage(real: Tensor, fake: Tensor, k: int) -> tuple[float, float]:
    """Naeem et al. 2020's density and coverage of `fake` (M, D) against `real` (N, D)."""
    real, fake = real.double(), fake.double()
    radii = _kth_radii(real, k)  # (N,)
    inside = torch.zeros(len(fake), dtype=torch.float64)  # real balls holding each fake
    nearest_fake = torch.full((len(real),), float("inf"), dtype=torch.float64)
    for start in range(0, len(real), CHUNK):
        r = real[start:start + CHUNK]
        d = torch.cdist(r, fake)  # (n, M)
        rad = radii[start:start + CHUNK, None]
        inside += (d < rad).double().sum(dim=0)
        nearest_fake[start:start + CHUNK] = d.min(dim=1).values
    density = float(inside.mean() / k)
    coverage = float((nearest_fake < radii).double().mean())
    return density, coverage


def precision_recall(real: Tensor, fake: Tensor, k: int) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019's improved precision and recall, by torch-fidelity."""
    from torch_fidelity.metric_prc import calculate_precision_recall_part

    # torch-fidelity's convention: the first argument is the generated side.
    return calculate_precision_recall_part(fake.double(), real.double(), neighborhood=k, batch_size=CHUNK)


def prdc(real: Tensor, fake: Tensor, k: int = 3, k_coverage: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of `fake` against `real` feature rows."""
    for side, x, kk in (("real", real, max(k, k_coverage)), ("generated", fake, k)):
        if len(x) <= kk:
            raise ValueError(f"{len(x)} {side} samples: k-NN balls need more than k = {kk}")
    precision, recall = precision_recall(real, fake, k)
    density, coverage = density_coverage(real, fake, k_coverage)
    return {PRECISION: precision, RECALL: recall, DENSITY: density, COVERAGE: coverage}


class Prdc:
    """Precision, recall, density and coverage in a feature space."""

    name = "prdc"
    paper = ('Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for Assessing Generative Models"; '
             'Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative Models"')
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        data = getattr(setup, "data", None)
        if data is not None:
            problem = features.space_of(resolved_space(params.space, data.kind), data)
            if problem:
                return f'space = "{params.space}": {problem}'
        for key, own in (("eval_samples", params.samples), ("real_samples", params.real)):
            n = own or (getattr(setup, key, None) if setup is not None else None)
            need = params.k if key == "eval_samples" else max(params.k, params.k_coverage)
            if n is not None and n <= need:
                return f"{n} {'generated' if key == 'eval_samples' else 'real'} samples: the k-NN balls need more than {need}"
        return None

    @ganbench.hookimpl
    def ganbench_evaluate(self, run: ganbench.Run, step: int, generator: nn.Module) -> ganbench.MetricValues | None:
        if not features.due(run, step, self.p.every):
            return None
        s = run.settings
        space = resolved_space(self.p.space, run.data.kind)
        real, split = features.real_features(run, space, self.p.real or s.real_samples)
        fake = features.generated_features(run, generator, space, self.p.samples or s.eval_samples)
        return ganbench.MetricValues(
            metric=self.name,
            values=prdc(real, fake, self.p.k, self.p.k_coverage),
            better=dict(BETTER),
            provenance={
                "space": space,
                "feature_dim": int(real.shape[1]),
                "k": self.p.k,
                "k_coverage": self.p.k_coverage,
                "generated_samples": len(fake),
                "real_samples": len(real),
                "real_split": split,
                "rule": RULE,
                "every": self.p.every,
            },
        )


@ganbench.hookimpl
def ganbench_register_metrics():
    return [Prdc]
