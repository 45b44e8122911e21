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

from ganbench.errors import did_you_mean
from ganbench.fid import comparable
from ganbench.report.load import FAILURES, FINISHED, SEVERITIES, UNFINISHED, Check, SuiteResults
from ganbench.report.stats import Comparison, Summary, fmt, mean_std, summarize, welch

# The primary metric, unless the suite chose one (suite.primary): the first of these that any run recorded.
PRIMARY = ("fid", "class_fd", "modes_covered", "kid_mean", "classes_covered", "high_quality_fraction")
# The domain or mode-coverage column, beside the primary metric.
COVERAGE = ("modes_covered", "classes_covered", "class_fd", "high_quality_fraction")
LABELS = {"fid": "FID", "kid_mean": "KID", "kid_std": "KID std", "class_fd": "class FD",
          "classes_covered": "classes covered", "class_kl": "class KL", "modes_covered": "modes covered",
          "mode_kl": "mode KL", "digit_fd": "digit FD", "high_quality_fraction": "high-quality fraction", "class_confidence": "class confidence",
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
    unconverged: int = 0  # scored runs below a convergence floor that guards the primary metric
    coverage_unconverged: int = 0  # scored runs below a floor that guards the coverage column
    guard_value: Summary | None = None  # the final value of the guarding key over the scored runs
    others: dict[str, Summary] = field(default_factory=dict)  # each of `Ranking.others`: its final value over seeds
    others_unconverged: dict[str, int] = field(default_factory=dict)  # runs below a floor guarding that key

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


@dataclass(frozen=True)
class Guard:
    """The convergence bound on a ranked value: `key` must reach `limit`, from above when `ceiling`
    (`ganbench.Convergence`)."""

    key: str
    limit: float
    why: str
    ceiling: bool = False

    @property
    def bound(self) -> str:
        """'at least 0.5' or 'at most 180'."""
        return f"{'at most' if self.ceiling else 'at least'} {fmt(self.limit)}"

    @property
    def missed(self) -> str:
        """How a run misses it: 'below 0.5' or 'above 180'."""
        return f"{'above' if self.ceiling else 'below'} {fmt(self.limit)}"


@dataclass
class Ranking:
    metric: str | None  # the primary metric key, None when no run recorded any metric
    better: str  # "min" or "max"
    why: str  # why this metric
    coverage: str | None
    baseline: str | None
    groups: list[Group]
    unranked: list[Row]  # configurations with no value to rank
    guard: Guard | None = None  # the floor guarding the primary metric, if any metric declared one
    suppressed: str | None = None  # why nothing is ranked: the baseline is not converged, or the chosen key is missing
    chosen: str | None = None  # the key the suite chose to rank by (suite.primary), recorded or not
    # Further metric keys with a better direction, each a column and a curve: in first-recorded order
    others: list[str] = field(default_factory=list)
    directions: dict[str, str] = field(default_factory=dict)  # each of `others`: "min" or "max"

    @property
    def rows(self) -> list[Row]:
        return [r for g in self.groups for r in g.rows] + self.unranked

    def rows_of(self, config: str) -> list[Row]:
        return [r for r in self.rows if r.config == config]


def choose_primary(results: SuiteResults) -> tuple[str | None, str]:
    """The key to rank by and why; (None, why) when there is none. A key the suite chose that no run
    recorded (or recorded without a better direction) ranks nothing: another key is never put in
    its place without a word."""
    keys = results.metric_keys()
    chosen = results.primary
    if chosen is not None:
        ranked = [k for k in keys if k in results.better]
        if chosen in ranked:
            return chosen, f'{label(chosen)}: chosen by the suite, primary = "{chosen}"'
        if chosen in keys:
            return None, (f'the suite chose primary = "{chosen}", but no run says whether a lower or a higher '
                          f'"{chosen}" is better (its metric gives it no better direction, or no run has finished), '
                          f"so nothing is ranked; keys with a direction: {', '.join(ranked) or 'none yet'}")
        return None, (f'the suite chose primary = "{chosen}", but no run recorded "{chosen}"{did_you_mean(chosen, keys)}, '
                      f"so nothing is ranked; the runs recorded: {', '.join(keys) or 'no metric yet'}")
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


def guard_of(results: SuiteResults, key: str | None) -> Guard | None:
    """The convergence floor that some run's metrics declared for `key` (the first found)."""
    for checks in results.convergence.values():
        for check in checks:
            if key is not None and key in check.guards:
                return Guard(check.key, check.limit, check.why, check.ceiling)
    return None


def below_floor(results: SuiteResults, run_id: str, key: str | None) -> bool:
    """True when a floor guarding `key` is declared for the run and its final value misses it."""
    checks: list[Check] = results.convergence.get(run_id, [])
    return any(not c.ok for c in checks if key is not None and key in c.guards)


def not_converged(ranking: Ranking, base: Row) -> str:
    guard = ranking.guard
    assert guard is not None
    return (f"the baseline {base.config} is not converged: its final {label(guard.key)} is {guard.missed} "
            f"in {base.unconverged} of {base.scored} runs (mean {fmt(base.guard_value.mean if base.guard_value else None)}), "
            f"and {label(ranking.metric)} counts samples that are not converged ({guard.why}); so no configuration "
            f"is ranked or tested on {label(ranking.metric)}. Train longer (a larger --scale), or fix the baseline")


def rank(results: SuiteResults) -> Ranking:
    runs = results.runs
    metric, why = choose_primary(results)
    better = results.better.get(metric, "min") if metric else "min"
    keys = results.metric_keys()
    # With nothing ranked there are no KID and coverage columns: every key with a direction is a further column.
    coverage = next((k for k in COVERAGE if k in keys and k != metric), None) if metric else None
    others = [k for k in keys if k in results.better and k not in (metric, coverage, "kid_mean" if metric else None)]
    baseline = results.baseline
    scored = scored_mask(runs, metric) if metric else pd.Series(False, index=runs.index)
    reps, membership = provenance_groups(results, metric, list(runs.loc[scored, "run_id"])) if metric else ([], {})
    group_of = runs["run_id"].map(membership)

    guard = guard_of(results, metric)

    def make_row(config: str, group: int, members: pd.DataFrame, all_runs: pd.DataFrame) -> Row:
        counts = all_runs["status"].value_counts().to_dict()
        ids = list(members["run_id"])
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
            unconverged=sum(below_floor(results, r, metric) for r in ids),
            coverage_unconverged=sum(below_floor(results, r, coverage) for r in ids),
            guard_value=summarize(_values(members, f"final_{guard.key}")) if guard else None,
            others={k: summarize(_values(further_pool(k, members, all_runs), f"final_{k}")) for k in others},
            others_unconverged={k: sum(below_floor(results, r, k) for r in further_pool(k, members, all_runs)["run_id"])
                                for k in others},
        )

    def further_pool(key: str, members: pd.DataFrame, all_runs: pd.DataFrame) -> pd.DataFrame:
        # The seeds the primary counts; with no primary, each run whose own final `key` counts.
        return members if metric else all_runs[scored_mask(all_runs, key)]

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

    ranking = Ranking(metric, better, why, coverage, baseline, groups, unranked, guard,
                      suppressed=why if results.primary is not None and metric is None else None,
                      chosen=results.primary, others=others, directions={k: results.better[k] for k in others})
    sign = 1 if better == "min" else -1
    order = list(results.configs)
    for group in groups:
        base = next((r for r in group.rows if r.config == baseline), None)
        if base is not None and base.unconverged and ranking.suppressed is None:
            ranking.suppressed = not_converged(ranking, base)
        for row in group.rows:
            if row.config == baseline:
                continue
            if base is not None and base.unconverged:
                row.vs_baseline = Comparison(None, None, None, "not compared: the baseline is not converged")
            elif row.unconverged:
                row.vs_baseline = Comparison(None, None, None,
                                             f"not compared: {row.unconverged}/{row.scored} runs not converged")
            else:
                row.vs_baseline = (welch(row.finals, base.finals) if base
                                   else Comparison(None, None, None, "n/a (baseline not measured this way)"))
        # Runs below a floor never earn a rank: ranked rows first, then the rest in the same order.
        group.rows.sort(key=lambda r: (r.unconverged > 0, sign * r.final.mean, order.index(r.config)))
        ranked = [r for r in group.rows if not (r.unconverged or (base is not None and base.unconverged))]
        for i, row in enumerate(ranked, 1):
            # Equal means share a rank (1, 1, 1, 4): eight of eight modes in every seed is a tie, not an order.
            row.rank = ranked[i - 2].rank if i > 1 and row.final.mean == ranked[i - 2].final.mean else i
    for row in unranked:
        if row.config != baseline:
            row.vs_baseline = Comparison(None, None, None, f"n/a (no final {label(metric or results.primary)})")
    return ranking


def convergence_text(row: Row, ranking: Ranking) -> str:
    """'not converged in 2/3 runs (high-quality fraction 0.03 ± 0.01 < 0.5)', or '' without a guard."""
    guard = ranking.guard
    if guard is None or not row.scored or row.guard_value is None:
        return ""
    value = f"{label(guard.key)} {mean_std(row.guard_value)}"
    if row.unconverged:
        return f"not converged in {row.unconverged}/{row.scored} runs ({value}; converged when {guard.bound})"
    return f"converged ({value}, {guard.bound} in every run)"


def direction(row: Row, ranking: Ranking) -> str | None:
    """'better' or 'worse' than the baseline when the difference is significant, else None."""
    c = row.vs_baseline
    if c is None or not c.significant() or c.diff is None or c.diff == 0:
        return None
    lower_is_better = ranking.better == "min"
    return "better" if (c.diff < 0) == lower_is_better else "worse"
