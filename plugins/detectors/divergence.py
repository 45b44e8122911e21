"""Divergence: NaN or inf in the losses, gradients or weights, or a loss that blows up.

Non-finite values always end the run ("diverged"): the core stops on them whatever the policy, and
never masks them (no nan_to_num). A finite blow-up is a loss whose size passes `blowup_factor`
times its early baseline (at least `blowup_floor`); its default policy is also `stop`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ganbench
from ganbench.detection import Baseline, finite, rounded

LOSSES = ("d_loss", "g_loss")


@dataclass(frozen=True)
class Params:
    blowup_factor: ganbench.PositiveFloat = 100.0  # a loss this many times its early size has blown up
    blowup_floor: ganbench.PositiveFloat = 10.0  # ...and at least this large in absolute value
    baseline_skip: ganbench.NonNegativeInt = 1  # train records skipped before the baseline (the first steps)
    baseline_records: ganbench.PositiveInt = 5  # train records whose median |loss| is the baseline


class Divergence(ganbench.PlainState):
    """NaN/inf in losses, gradients or weights (always fatal), and loss blow-ups."""

    name = "divergence"
    params = Params
    kinds = {"divergence": "diverged"}

    def __init__(self, params: Params) -> None:
        self.p = params
        self.baselines = {k: Baseline(params.baseline_skip, params.baseline_records) for k in LOSSES}
        self.blown: set[str] = set()

    @ganbench.hookimpl
    def ganbench_detect(self, record: dict[str, Any]) -> list[ganbench.Incident] | None:
        if record["kind"] != "train":
            return None
        if "nonfinite" in record:
            first = min(v["step"] for v in record["nonfinite"].values())
            what = "; ".join(f"{' and '.join(v['keys'])} at step {v['step']}" for v in record["nonfinite"].values())
            return [ganbench.Incident(
                "divergence", "critical", f"non-finite values: {what}; the run cannot continue",
                {"nonfinite": record["nonfinite"], **{k: record.get(k) for k in LOSSES}}, step=first)]
        found = []
        for key in LOSSES:
            value = record.get(key)
            base = self.baselines[key].update(abs(value) if finite(value) else None)
            if base is None or key in self.blown or not finite(value):
                continue
            limit = max(self.p.blowup_factor * base, self.p.blowup_floor)
            if abs(value) > limit:
                self.blown.add(key)
                found.append(ganbench.Incident(
                    "divergence", "critical",
                    f"{key} blew up to {value:.4g}, {abs(value) / base:.0f}x its early size {base:.3g}",
                    {key: rounded(value), "baseline": rounded(base), "limit": rounded(limit),
                     "blowup_factor": self.p.blowup_factor}))
        return found or None


@ganbench.hookimpl
def ganbench_register_detectors():
    return [Divergence]
