"""Vanishing and exploding gradients in G or D, relative to the run's own early baseline.

A network's mean gradient norm (the diagnostics' grad_norm_g / grad_norm_d) is compared with its
median over the run's first records; a sustained fall below `vanish_factor` of it, or rise above
`explode_factor` times it, is an incident. Needs `diagnostics = true`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ganbench
from ganbench.detection import Baseline, Sustained, finite, rounded

NETWORKS = {"g": "generator", "d": "discriminator"}


@dataclass(frozen=True)
class Params:
    vanish_factor: ganbench.PositiveFloat = 0.01  # below this fraction of the baseline norm: vanishing
    explode_factor: ganbench.PositiveFloat = 100.0  # above this multiple of the baseline norm: exploding
    window: ganbench.PositiveInt = 3  # consecutive train records the condition must hold
    baseline_skip: ganbench.NonNegativeInt = 1  # train records skipped before the baseline
    baseline_records: ganbench.PositiveInt = 5  # train records whose median norm is the baseline


class Gradients(ganbench.PlainState):
    """G's or D's gradient norm collapsing or exploding against its early baseline."""

    name = "gradients"
    params = Params
    kinds = {"vanishing-gradients": "stopped", "exploding-gradients": "stopped"}

    def __init__(self, params: Params) -> None:
        self.p = params
        self.baselines = {n: Baseline(params.baseline_skip, params.baseline_records) for n in NETWORKS}
        self.vanishing = {n: Sustained(params.window) for n in NETWORKS}
        self.exploding = {n: Sustained(params.window) for n in NETWORKS}
        self.recent: dict[str, list[float]] = {n: [] for n in NETWORKS}

    @ganbench.hookimpl
    def ganbench_detect(self, record: dict[str, Any]) -> list[ganbench.Incident] | None:
        if record["kind"] != "train":
            return None
        found = []
        for short, network in NETWORKS.items():
            norm = record.get(f"grad_norm_{short}")
            if not finite(norm):
                continue
            self.recent[short] = (self.recent[short] + [norm])[-self.p.window:]
            base = self.baselines[short].update(norm)
            if base is None or base == 0:
                continue
            evidence = {f"grad_norm_{short}": rounded(norm), "baseline": rounded(base),
                        "recent": [rounded(v) for v in self.recent[short]], "window": self.p.window}
            step = record["step"]
            vanish, explode = self.p.vanish_factor, self.p.explode_factor
            checks = (("vanishing-gradients", self.vanishing, "under", vanish, norm < vanish * base),
                      ("exploding-gradients", self.exploding, "over", explode, norm > explode * base))
            for kind, sustained, side, factor, holds in checks:
                if sustained[short].update(holds, step):
                    found.append(ganbench.Incident(
                        kind, "warning",
                        f"{network} gradient norm {norm:.3g} has stayed {side} {factor:g}x its early "
                        f"{base:.3g} for {self.p.window} records",
                        {**evidence, "threshold": rounded(factor * base), "network": network},
                        step=sustained[short].start_step))
        return found or None


@ganbench.hookimpl
def ganbench_register_detectors():
    return [Gradients]
