"""Nearest-neighbour distances between generated and real samples, in a feature space (a
symmetric Chamfer distance, as in Fan et al. 2017's point-set generation)."""
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

import ganbench
from ganbench import features

FAKE_TO_REAL = "nn_fake_to_real"  # mean distance from a generated sample to its nearest real one
REAL_TO_FAKE = "nn_real_to_fake"  # mean distance from a real sample to its nearest generated one


@dataclass(frozen=True)
class Params:
    space: Literal["pixels", "classifier", "inception"] = "pixels"  # ganbench.features space
    samples: ganbench.NonNegativeInt = 0  # generated samples; 0 = eval_samples
    real: ganbench.NonNegativeInt = 0  # real samples; 0 = real_samples
    every: ganbench.PositiveInt = 1  # evaluate at every k-th eval point (the last step always)


def nn_distances(real: Tensor, fake: Tensor) -> dict[str, float]:
    """Mean Euclidean distance from each row of `fake` to its nearest row of `real`, and back."""
    d = torch.cdist(fake.double(), real.double())  # (M, N)
    return {FAKE_TO_REAL: float(d.min(dim=1).values.mean()), REAL_TO_FAKE: float(d.min(dim=0).values.mean())}


class NearestNeighbourDistance:
    """Mean nearest-neighbour distance, generated to real (fidelity) and real to generated (coverage)."""

    name = "nn-distance"
    params = Params

    def __init__(self, params: Params):
        self.p = params

    @classmethod
    def check(cls, params: Params, setup) -> str | None:
        data = getattr(setup, "data", None)  # the dataset's DataInfo: kind, shape, num_classes
        problem = features.space_of(params.space, data) if data is not None else ""
        return f'space = "{params.space}": {problem}' if problem else None

    @ganbench.hookimpl
    def ganbench_evaluate(self, run: ganbench.Run, step: int, generator: nn.Module) -> ganbench.MetricValues | None:
        if not features.due(run, step, self.p.every):
            return None
        real, split = features.real_features(run, self.p.space, self.p.real or run.settings.real_samples)
        fake = features.generated_features(run, generator, self.p.space, self.p.samples or run.settings.eval_samples)
        return ganbench.MetricValues(
            metric=self.name,
            values=nn_distances(real, fake),
            better={FAKE_TO_REAL: "min", REAL_TO_FAKE: "min"},
            provenance={"space": self.p.space, "feature_dim": int(real.shape[1]), "generated_samples": len(fake),
                        "real_samples": len(real), "real_split": split, "every": self.p.every},
        )


@ganbench.hookimpl
def ganbench_register_metrics():
    return [NearestNeighbourDistance]
