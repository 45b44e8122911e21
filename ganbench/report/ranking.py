"""The ranking: one row per configuration, by the final value of a primary metric, over seeds.

Only values measured the same way are ranked together: runs are grouped by the provenance of their
final primary value (`ganbench.fid.comparable`), and each group is ranked on its own. A run's value
counts when it was measured at the run's last planned step; runs that stopped early (diverged,
failed, stopped by a detector) count in the failure and status columns instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ganbench.fid import comparable
from ganbench.report.load import FAILURES, FINISHED, SEVERITIES, UNFINISHED, SuiteResults
from ganbench.report.stats import Comparison, Summary, summarize, welch

# The primary metric: the first of these that any run recorded.
PRIMARY = ("fid", "class_fd", "modes_covered", "kid_mean", "classes_covered", "high_quality_fraction")
# The domain or mode-coverage column, beside the primary metric.
COVERAGE = ("modes_covered", "classes_covered", "class_fd", "high_quality_fraction")
LABELS = {"fid": "FID", "kid_mean": "KID", "kid_std": "KID std", "class_fd": "class FD",
          "classes_covered": "classes covered", "class_kl": "class KL", "modes_covered": "modes covered",
          "mode_kl": "mode KL", "high_quality_fraction": "high-quality fraction",
          "diversity_ratio": "diversity ratio", "duplicate_rate": "duplicate rate"}


def label(key: str | None) -> str:
    return "–" if key is None else LABELS.get(key, key)


@dataclass
class Row:
    config: str
    group: int  # the provenance group (0: the first)
    planned: int  # runs of this configuration listed in suite.json
    scored: int  # runs whose primary value counts
    status_counts: dict[str, int]
    final: Summary
    best: Summary
    kid: Summary
    coverage: Summary
    sec_per_step: float | None
    incidents: int
    worst_incident: str | None
    finals: list[float] = field(default_factory=list)  # the scored values, in seed order
    seeds: list[Any] = field(default_factory=list)
    vs_baseline: Comparison | None = None  # None for the baseline itself
    rank: int | None = None

    @property
    def failures(self) -> int:
        return sum(self.status_counts.get(s, 0) for s in FAILURES)

    @property
    def finished(self) -> int:
        return sum(self.status_counts.get(s, 0) for s in FINISHED)

    @property
    def unfinished(self) -> int:
        return sum(self.status_counts.get(s, 0) for s in UNFINISHED)


@dataclass
class Group:
    index: int
    provenance: dict[str, Any]
    differs: dict[str, Any]  # provenance keys whose value differs from group 0's, with this group's values
    rows: list[Row]


@dataclass
class Ranking:
    metric: str | None  # the primary metric key, None when no run recorded any metric
    better: str  # "min" or "max"
    why: str  # why this metric
    coverage: str | None
    baseline: str | None
    groups: list[Group]
    unranked: list[Row]  # configurations with no value to rank

    @property
    def rows(self) -> list[Row]:
        return [r for g in self.groups for r in g.rows] + self.unranked

    def rows_of(self, config: str) -> list[Row]:
        return [r for r in self.rows if r.config == config]


def choose_primary(results: SuiteResults) -> tuple[str | None, str]:
    keys = results.metric_keys()
    for key in PRIMARY:
        if key in keys:
            if key == "fid":
                return key, "FID: recorded by the runs"
            return key, f"{label(key)}: no run recorded FID, and {label(key)} is the next primary metric recorded"
    ranked = [k for k in keys if k in results.better]
    if ranked:
        return ranked[0], f"{label(ranked[0])}: no run recorded FID or another built-in primary metric"
    return None, "no run recorded a metric with a better direction; configurations are listed in the suite's order"


def _values(frame: pd.DataFrame, column: str) -> list[float | None]:
    if column not in frame.columns:
        return [None] * len(frame)
    return [None if pd.isna(v) else float(v) for v in frame[column]]


def scored_mask(runs: pd.DataFrame, key: str) -> pd.Series:
    """Runs whose final `key` was measured at their last planned step (or that completed)."""
    if f"final_{key}" not in runs.columns:
        return pd.Series(False, index=runs.index)
    has = runs[f"final_{key}"].notna()
    at_end = (runs[f"final_{key}_step"] == runs["steps"]) if "steps" in runs.columns else has & False
    unknown_steps = runs["steps"].isna() if "steps" in runs.columns else pd.Series(True, index=runs.index)
    # A failed, diverged or collapsed run counts in the failure column, never in the average.
    finished = runs["status"].isin(FINISHED) & ~runs["status"].isin(FAILURES)
    return has & (at_end | (unknown_steps & (runs["status"] == "completed"))) & finished


def provenance_groups(results: SuiteResults, key: str, run_ids: list[str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Representatives of each group of mutually comparable provenances, and each run's group."""
    representatives: list[dict[str, Any]] = []
    membership: dict[str, int] = {}
    for run_id in run_ids:
        prov = results.provenance.get(run_id, {}).get(key, {})
        for index, rep in enumerate(representatives):
            if not comparable(rep, prov):
                membership[run_id] = index
                break
        else:
            membership[run_id] = len(representatives)
            representatives.append(prov)
    return representatives, membership


def rank(results: SuiteResults) -> Ranking:
    runs = results.runs
    metric, why = choose_primary(results)
    better = results.better.get(metric, "min") if metric else "min"
    keys = results.metric_keys()
    coverage = next((k for k in COVERAGE if k in keys and k != metric), None)
    baseline = results.baseline
    scored = scored_mask(runs, metric) if metric else pd.Series(False, index=runs.index)
    reps, membership = provenance_groups(results, metric, list(runs.loc[scored, "run_id"])) if metric else ([], {})
    group_of = runs["run_id"].map(membership)

    def make_row(config: str, group: int, members: pd.DataFrame, all_runs: pd.DataFrame) -> Row:
        counts = all_runs["status"].value_counts().to_dict()
        speeds = [v for v in _values(all_runs, "sec_per_step") if v is not None]
        worst = [w for w in all_runs.get("worst_incident", pd.Series(dtype=object)) if w in SEVERITIES]
        return Row(
            config=config, group=group, planned=len(all_runs), scored=len(members),
            status_counts={str(k): int(v) for k, v in counts.items()},
            final=summarize(_values(members, f"final_{metric}")) if metric else summarize([]),
            best=summarize(_values(members, f"best_{metric}")) if metric else summarize([]),
            kid=summarize(_values(members, "final_kid_mean")) if metric and metric != "kid_mean" else summarize([]),
            coverage=summarize(_values(members, f"final_{coverage}")) if coverage else summarize([]),
            sec_per_step=sum(speeds) / len(speeds) if speeds else None,
            incidents=int(pd.to_numeric(all_runs.get("incidents"), errors="coerce").fillna(0).sum()),
            worst_incident=max(worst, key=SEVERITIES.index) if worst else None,
            finals=[v for v in _values(members, f"final_{metric}") if v is not None] if metric else [],
            seeds=list(members["seed"]),
        )

    groups = [Group(i, rep, {k: rep.get(k) for k in comparable(reps[0], rep)}, []) for i, rep in enumerate(reps)]
    unranked: list[Row] = []
    for config in results.configs:
        all_runs = runs[runs["config"] == config]
        config_groups = sorted({int(g) for g in group_of[(runs["config"] == config) & scored].dropna()})
        if not config_groups:
            unranked.append(make_row(config, -1, all_runs.iloc[0:0], all_runs))
        for g in config_groups:
            members = runs[(runs["config"] == config) & scored & (group_of == g)]
            groups[g].rows.append(make_row(config, g, members, all_runs))

    sign = 1 if better == "min" else -1
    for group in groups:
        base = next((r for r in group.rows if r.config == baseline), None)
        for row in group.rows:
            if row.config != baseline:
                row.vs_baseline = (welch(row.finals, base.finals) if base
                                   else Comparison(None, None, None, "n/a (baseline not measured this way)"))
        order = list(results.configs)
        group.rows.sort(key=lambda r: (sign * r.final.mean, order.index(r.config)))
        for i, row in enumerate(group.rows, 1):
            row.rank = i
    for row in unranked:
        if row.config != baseline:
            row.vs_baseline = Comparison(None, None, None, f"n/a (no final {label(metric)})")
    return Ranking(metric, better, why, coverage, baseline, groups, unranked)


def direction(row: Row, ranking: Ranking) -> str | None:
    """'better' or 'worse' than the baseline when the difference is significant, else None."""
    c = row.vs_baseline
    if c is None or not c.significant() or c.diff is None or c.diff == 0:
        return None
    lower_is_better = ranking.better == "min"
    return "better" if (c.diff < 0) == lower_is_better else "worse"
