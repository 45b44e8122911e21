"""Mode collapse, from three signals:

* label-free, every train record: the diagnostics' batch diversity (mean pairwise distance within
  the fake batch over that within the real batch) and near-duplicate rate. An untrained G is not
  diverse either, so a low value alone is not collapse: the diversity must fall below
  `diversity_min` and below half of the best it reached. Total collapse (diversity under
  `total_diversity`, nearly every fake a near-duplicate) counts from the start;
* labelled images, at eval points: classes covered (the classifier metric), falling by
  `coverage_drop` of the classes from its best, or ending the run under `coverage_min` of them;
* 2-D mixtures and Stacked MNIST, at eval points: modes covered, the same way.
Total collapse is critical; the rest are warnings.

A count of classes or modes says nothing while the samples are smeared between them: a smear
"covers" modes at a low high-quality fraction, and loses or gains them at random. Where the metric
declares what converged means for its count (`ganbench.Convergence`), a count at an eval point
outside that bound is neither a best to fall from nor a fall; a run that ends outside it with a low
count still gets its warning, which says that the samples are not converged and gives the value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ganbench
from ganbench.detection import Sustained, finite, rounded

COVERAGE_KEYS = {"classes_covered": "classes_total", "modes_covered": "modes_total"}


@dataclass(frozen=True)
class Params:
    diversity_min: ganbench.PositiveFloat = 0.3  # fake/real batch diversity below this (and half its best) is collapse
    diversity_drop: ganbench.Probability = 0.5  # ...having fallen by this share from its best
    total_diversity: ganbench.PositiveFloat = 0.01  # below this, with over 90% duplicates: total collapse
    window: ganbench.PositiveInt = 3  # consecutive train records for the label-free signal
    coverage_min: ganbench.Probability = 0.75  # ending the run covering under this share of classes/modes
    coverage_drop: ganbench.Probability = 0.3  # falling by this share of the total from the best


class ModeCollapse(ganbench.PlainState):
    """Batch diversity and duplicates, class coverage and mode coverage."""

    name = "mode-collapse"
    params = Params
    kinds = {"mode-collapse": "collapsed"}

    def __init__(self, params: Params) -> None:
        self.p = params
        self.sustained = Sustained(params.window)
        self.total = Sustained(params.window)
        self.best_diversity = 0.0
        self.best: dict[str, float] = {}
        self.coverage_active: set[str] = set()

    @ganbench.hookimpl
    def ganbench_detect(self, run: ganbench.Run, record: dict[str, Any]) -> list[ganbench.Incident] | None:
        if record["kind"] == "train":
            return self.batch_signal(record)
        return self.coverage_signal(record, final=record["step"] == run.settings.steps)

    def batch_signal(self, record: dict[str, Any]) -> list[ganbench.Incident] | None:
        diversity, duplicates = record.get("batch_diversity"), record.get("duplicate_rate")
        if not (finite(diversity) and finite(duplicates)):
            return None
        self.best_diversity = max(self.best_diversity, diversity)
        step = record["step"]
        evidence = {"batch_diversity": rounded(diversity), "duplicate_rate": rounded(duplicates),
                    "best_diversity": rounded(self.best_diversity), "window": self.p.window}
        total = diversity < self.p.total_diversity and duplicates > 0.9
        if self.total.update(total, step):
            return [ganbench.Incident(
                "mode-collapse", "critical",
                f"total collapse: generated batches have {diversity:.3f}x the real batches' diversity and "
                f"{duplicates:.0%} near-duplicates, for {self.p.window} records",
                {**evidence, "total_diversity": self.p.total_diversity}, step=self.total.start_step)]
        dropped = (diversity < self.p.diversity_min
                   and diversity < (1 - self.p.diversity_drop) * self.best_diversity)
        if self.sustained.update(dropped and not total, step):
            return [ganbench.Incident(
                "mode-collapse", "warning",
                f"generated batches fell to {diversity:.2f}x the real batches' diversity (best {self.best_diversity:.2f}), "
                f"{duplicates:.0%} near-duplicates, for {self.p.window} records",
                {**evidence, "diversity_min": self.p.diversity_min, "diversity_drop": self.p.diversity_drop},
                step=self.sustained.start_step)]
        return None

    def coverage_signal(self, record: dict[str, Any], final: bool) -> list[ganbench.Incident] | None:
        found = []
        provenance = record.get("provenance", {})
        for key, total_key in COVERAGE_KEYS.items():
            value = record.get(key)
            total = next((p[total_key] for p in provenance.values() if total_key in p), None)
            if not finite(value) or not total:
                continue
            unconverged = _unconverged(record, key)
            if unconverged is None:
                best = self.best[key] = max(self.best.get(key, value), value)
                dropped = best - value >= self.p.coverage_drop * total
            else:  # a smear's count wanders: neither a best to fall from nor a fall
                best, dropped = self.best.get(key, value), False
            low = final and value < self.p.coverage_min * total
            if not (low or dropped):
                self.coverage_active.discard(key)
                continue
            if key in self.coverage_active:
                continue
            self.coverage_active.add(key)
            why = f"down from {best:g}" if dropped else f"under {self.p.coverage_min:.0%} of them at the end of the run"
            message = f"{key.replace('_', ' ')}: {value:g} of {total}, {why}"
            evidence = {key: value, "total": total, "best": best, "coverage_min": self.p.coverage_min,
                        "coverage_drop": self.p.coverage_drop}
            if unconverged is not None:
                message, evidence = _unconverged_caveat(key, message, evidence, *unconverged)
            found.append(ganbench.Incident("mode-collapse", "warning", message, evidence))
        return found or None


def _unconverged(record: dict[str, Any], key: str) -> tuple[ganbench.Convergence, float] | None:
    """The bound a metric declared for `key`, with its value here, when this eval point is outside it."""
    for provenance in record.get("provenance", {}).values():
        bound = ganbench.Convergence.from_record(provenance.get("convergence") if isinstance(provenance, dict) else None)
        if bound is None or key not in bound.guards or not finite(record.get(bound.key)):
            continue
        if not bound.holds(record[bound.key]):
            return bound, record[bound.key]
    return None


def _unconverged_caveat(key: str, message: str, evidence: dict[str, Any], bound: ganbench.Convergence,
                        sharpness: float) -> tuple[str, dict[str, Any]]:
    """The incident's message and evidence for a count from samples outside their metric's bound."""
    side = f"under the floor {bound.at_least:g}" if bound.at_least is not None else f"over the ceiling {bound.at_most:g}"
    limit = {"converged_at_least": bound.at_least} if bound.at_least is not None else {"converged_at_most": bound.at_most}
    return (f"{message}; but the samples are not converged: {bound.key.replace('_', ' ')} {sharpness:.4g}, {side} "
            f"that {key.replace('_', ' ')} needs ({bound.why}), so this may be a smear rather than a collapse",
            {**evidence, bound.key: rounded(sharpness), **limit})


@ganbench.hookimpl
def ganbench_register_detectors():
    return [ModeCollapse]
