"""The report's search section, for a suite run with [search] (Lucic et al. 2018's budget-fair
comparison): per configuration the best trial's settings and value, that value re-measured on the
fresh final seeds, the distribution of all trial values, the expected best value as a function of
the number of trials with its band (`budget.py`), and whether the ranking changes with the budget.

Trial values and states are read from the Optuna storage suite.json names (search.db by default),
so a study shared by several workers is reported whole, whichever worker's folder builds it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ganbench.report.budget import Point, budgets, curve, ranking_changes
from ganbench.report.figures import Figure, _png, colours, matplotlib, plt
from ganbench.report.load import SuiteResults
from ganbench.report.ranking import label
from ganbench.report.stats import fmt

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass
class StudyResult:
    """One configuration's study, read."""

    config: str
    name: str
    values: list[float] = field(default_factory=list)  # complete trials' values, in trial order
    pruned: int = 0
    failed: int = 0  # trials whose runs failed, diverged or collapsed (not a dead worker's, nor pruned ones)
    running: int = 0  # running or waiting to be asked again
    best: tuple[int, float, dict[str, Any]] | None = None  # trial number, value, params
    pruned_trials: list[tuple[int, int | None]] = field(default_factory=list)  # (number, eval step it stopped at)


def storage_url(results: SuiteResults) -> str | None:
    """The storage's URL; the default SQLite file is named relative to the output folder."""
    stored = (results.suite.get("search") or {}).get("storage")
    if not isinstance(stored, str) or not stored:
        return None
    if "://" in stored:
        return stored
    path = results.root / stored
    return f"sqlite:///{path.resolve()}" if path.is_file() else None


def read_studies(results: SuiteResults) -> tuple[list[StudyResult], list[str]]:
    """Every study suite.json names, with a note for what could not be read."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = results.suite.get("search") or {}
    url = storage_url(results)
    if url is None:
        return [], [f"the search storage ({search.get('storage')}) was not found; trial values are not shown"]
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    except Exception as exc:  # noqa: BLE001 - any driver error: the report is still built, without the search
        return [], [f"the search storage {url} could not be opened ({type(exc).__name__}: {exc})"]
    found = []
    for config, name in (search.get("studies") or {}).items():
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            notes.append(f'study "{name}" is not in the storage yet')
            continue
        found.append(study_result(config, study))
    return found, notes


def study_result(config: str, study: Any) -> StudyResult:
    from optuna.trial import TrialState

    result = StudyResult(config, study.study_name)
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE and t.value is not None:
            result.values.append(float(t.value))
        elif t.state == TrialState.PRUNED:
            result.pruned += 1
            result.pruned_trials.append((t.number, t.user_attrs.get("pruned_at")))
        elif t.state == TrialState.FAIL and "failed_runs" in t.user_attrs:
            result.failed += 1
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            result.running += 1
    if result.values:
        best = study.best_trial
        result.best = (best.number, float(best.value), dict(best.params))
    return result


def remeasured(results: SuiteResults, config: str, key: str) -> tuple[float | None, float | None, int]:
    """Mean, standard deviation and count of the final runs' final `key` (the fresh seeds)."""
    runs = results.runs
    column = f"final_{key}"
    if runs.empty or column not in runs.columns:
        return None, None, 0
    values = [float(v) for v in runs.loc[runs["config"] == config, column] if isinstance(v, (int, float)) and np.isfinite(v)]
    if not values:
        return None, None, 0
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None), len(values)


def _params(params: dict[str, Any]) -> str:
    return "; ".join(f"{k} = {fmt(v) if isinstance(v, float) else v}" for k, v in params.items())


def verdict(curves: dict[str, list[Point]], direction: str, key: str) -> str:
    """One paragraph: does the order of the configurations' expected best change with the budget?"""
    if len(curves) < 2:
        return "Fewer than two configurations have a completed trial: there is no ranking to compare across budgets."
    changes, orders = ranking_changes(curves, direction)
    largest = max(orders)
    shown = ", ".join(str(n) for n in orders)
    top = orders[largest]
    lead = curves[top[0]][largest - 1]
    close = [c for c in top[1:] if abs(curves[c][largest - 1].mean - lead.mean) <= lead.std + curves[c][largest - 1].std]
    tie = (f" At {largest} trials, {', '.join(close)} {'is' if len(close) == 1 else 'are'} within one standard deviation "
           f"of {top[0]}'s expected best." if close else "")
    if not changes:
        return (f"The ranking by expected best {label(key)} does not change with the budget: "
                f"{', '.join(top)} (best first) at every budget shown ({shown} trials).{tie}")
    steps = "; ".join(f"{n} trial{'s' if n > 1 else ''}: {', '.join(o)}" for n, o in orders.items())
    leaders = list(dict.fromkeys(o[0] for o in orders.values()))
    lead_text = (f" The leader changes: {' → '.join(leaders)}." if len(leaders) > 1 else
                 f" {top[0]} leads at every budget; the order behind it changes.")
    return f"The ranking by expected best {label(key)} changes with the budget ({steps}).{lead_text}{tie}"


def figures(studies: list[StudyResult], curves: dict[str, list[Point]], key: str, direction: str) -> list[Figure]:
    names = [s.config for s in studies]
    colour = colours(names)
    better = "lower" if direction == "min" else "higher"
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(names) + 2), 3.8))
    rng = np.random.default_rng(0)  # the strip's jitter only
    with_values = [s for s in studies if s.values]
    if with_values:
        ax.boxplot([s.values for s in with_values], positions=[names.index(s.config) for s in with_values],
                   widths=0.5, showfliers=False, medianprops={"color": "black"})
    for i, s in enumerate(studies):
        x = i + rng.uniform(-0.15, 0.15, len(s.values))
        ax.scatter(x, s.values, s=14, color=colour[s.config], alpha=0.8, zorder=3)
    ax.set_xticks(range(len(names)), [f"{s.config}\n{len(s.values)} done\n{s.pruned} pruned, {s.failed} failed"
                                      for s in studies], fontsize=8)
    ax.set_ylabel(f"{label(key)} ({better} is better)")
    ax.grid(axis="y", alpha=0.3)
    strip = Figure("search-trials", "Trial values per configuration",
                   f"Every completed trial's {label(key)} (mean over its seeds), with a box of their quartiles. "
                   "Pruned trials stopped early and failed ones have no value; both are counted under each name.",
                   _png(fig))
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for s in studies:
        points = curves.get(s.config)
        if not points:
            continue
        n = np.array([p.n for p in points])
        mean = np.array([p.mean for p in points])
        std = np.array([p.std for p in points])
        ax.plot(n, mean, color=colour[s.config], label=s.config, marker="o" if len(n) < 12 else None, ms=3)
        ax.fill_between(n, mean - std, mean + std, color=colour[s.config], alpha=0.15)
    ax.set_xlabel("trials (hyperparameter settings tried)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(f"expected best {label(key)}")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    budget = Figure("search-budget", "Expected best value against the number of trials",
                    f"The expected best {label(key)} ({better} is better) of n trials drawn from each configuration's "
                    "completed trials (Dodge et al. 2019, with replacement), with a band of ± one standard deviation "
                    "of that best: Lucic et al. 2018's budget plot. Each curve ends at its number of completed trials.",
                    _png(fig))
    return [strip, budget]


def search_view(results: SuiteResults) -> dict[str, Any] | None:
    """The search section's values and figures (as Figure objects under "figure_list"), or None for
    a suite without [search]."""
    search = results.suite.get("search")
    if not isinstance(search, dict):
        return None
    objective = search.get("objective") or {}
    key, direction = str(objective.get("key", "?")), objective.get("direction", "min")
    studies, notes = read_studies(results)
    curves = {s.config: curve(s.values, direction) for s in studies if s.values}
    rows = []
    for s in studies:
        mean, std, count = remeasured(results, s.config, key)
        points = curves.get(s.config) or []
        rows.append({
            "config": s.config, "complete": len(s.values), "pruned": s.pruned, "failed": s.failed, "running": s.running,
            "best_trial": f"#{s.best[0]}" if s.best else "–", "best_value": fmt(s.best[1]) if s.best else "–",
            "best_params": _params(s.best[2]) if s.best else "–",
            "remeasured": (f"{fmt(mean)} ± {fmt(std)} ({count} seeds)" if std is not None else
                           f"{fmt(mean)} ({count} seed{'s' if count != 1 else ''})") if mean is not None else "not yet",
            "e1": f"{fmt(points[0].mean)} ± {fmt(points[0].std)}" if points else "–",
            "en": f"{fmt(points[-1].mean)} ± {fmt(points[-1].std)} (n = {points[-1].n})" if points else "–",
        })
    for s in studies:
        if s.failed:  # the curves draw from completed trials: an unstable configuration would look as reliable
            share = s.failed / (s.failed + len(s.values))
            notes.append(f"{s.config}: {s.failed} of {s.failed + len(s.values)} finished trials failed (diverged, "
                         f"collapsed or raised) and are not in its expected-best curve; a draw of its settings failed "
                         f"{share:.0%} of the time, so n draws all fail with probability {share:.2f}^n")
    largest = min((len(p) for p in curves.values()), default=0)
    table = [{"n": n, "cells": [fmt(curves[s.config][n - 1].mean) if s.config in curves else "–" for s in studies]}
             for n in budgets(largest)]
    return {
        "sampler": search.get("sampler"), "seed": search.get("seed"), "trials": search.get("trials"),
        "seeds_per_trial": search.get("seeds_per_trial"), "trial_seeds": ", ".join(map(str, search.get("trial_seeds") or [])),
        "final_seeds": ", ".join(map(str, search.get("final_seeds") or [])), "pruner": search.get("pruner"),
        "storage": search.get("storage"), "objective": f"{label(key)} ({key}) at the {objective.get('at', 'last')} eval "
                                                       f"point, {'lower' if direction == 'min' else 'higher'} is better",
        "rows": rows, "configs": [s.config for s in studies], "budget_table": table,
        "pruned": [f"{s.config} #{n}" + (f" (at step {at})" if at is not None else "") for s in studies
                   for n, at in s.pruned_trials],
        "verdict": verdict(curves, direction, key), "notes": notes,
        "figure_list": figures(studies, curves, key, direction) if studies else [],
    }
