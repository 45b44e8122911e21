"""The report's plots, drawn with matplotlib (Agg) into PNG bytes: a curve for every metric with a
better direction, losses, D's outputs, gradient norms with incidents, and any further diagnostics the
runs recorded, with the train-record keys the suite's `plot` or its plugins' `plot` ask for.

Each configuration keeps one colour in every figure. Curves are the mean over seeds; metric curves
add a band of ± one standard deviation over seeds, and training curves draw each seed thinly
behind the mean, so a spike in one seed is not averaged away.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402

from ganbench.report.damage import safe_name  # noqa: E402
from ganbench.report.load import SuiteResults  # noqa: E402
from ganbench.report.ranking import Ranking, label  # noqa: E402

DPI = 110
SEVERITY_COLOURS = {"info": "#7f7f7f", "warning": "#ff7f0e", "critical": "#d62728"}
DIAGNOSTICS = {  # further train-record keys worth a panel, with their titles
    "d_acc": "D accuracy", "d_gap": "D gap (real − fake score)", "grad_ratio": "grad-norm ratio G / D",
    "sn_max_d": "largest singular value in D", "weight_norm_d": "D weight norm", "weight_norm_g": "G weight norm",
}


@dataclass(frozen=True)
class Figure:
    name: str  # file stem under figures/ (a safe name: metric keys come from the runs' files)
    title: str
    caption: str
    png: bytes
    keys: tuple[str, ...] = ()  # the record keys it draws


def colours(configs: list[str]) -> dict[str, str]:
    cycle = plt.get_cmap("tab10").colors if len(configs) <= 10 else plt.get_cmap("tab20").colors
    return {c: matplotlib.colors.to_hex(cycle[i % len(cycle)]) for i, c in enumerate(configs)}


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _numeric(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and pd.to_numeric(frame[column], errors="coerce").notna().any()


def _by_config(frame: pd.DataFrame, x: str, y: str) -> dict[str, pd.DataFrame]:
    """config -> a table indexed by x with one column per run (NaN where a run has no value)."""
    data = frame[["config", "run_id", x, y]].copy()
    data[y] = pd.to_numeric(data[y], errors="coerce")
    data = data.dropna(subset=[x])
    return {config: part.pivot_table(index=x, columns="run_id", values=y, aggfunc="mean", dropna=False)
            for config, part in data.groupby("config", sort=False)}


def _legend(ax: plt.Axes) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, frameon=False)


def metric_curve(results: SuiteResults, key: str, colour: dict[str, str]) -> Figure | None:
    evals = results.evals
    if not _numeric(evals, key):
        return None
    x = "images_seen" if _numeric(evals, "images_seen") else "step"
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for config, table in _by_config(evals, x, key).items():
        if table.empty:
            continue
        mean, std, n = table.mean(axis=1), table.std(axis=1, ddof=1), table.notna().sum(axis=1)
        ax.plot(table.index, mean, marker="o", ms=3, color=colour.get(config), label=f"{config} ({table.shape[1]} seeds)")
        band = n >= 2
        if band.any():
            ax.fill_between(table.index[band], (mean - std)[band], (mean + std)[band], color=colour.get(config),
                            alpha=0.18, linewidth=0)
    direction = results.better.get(key)
    ax.set_xlabel("images seen" if x == "images_seen" else "step")
    ax.set_ylabel(label(key) + {"min": " (lower is better)", "max": " (higher is better)"}.get(direction, ""))
    ax.grid(alpha=0.3)
    _legend(ax)
    return Figure(f"metric-{safe_name(key)}", f"{label(key)} over training",
                  f"{label(key)} against images seen: mean over seeds, band ± 1 std where 2 or more seeds have a value.",
                  _png(fig), (key,))


def _training_panel(ax: plt.Axes, results: SuiteResults, key: str, colour: dict[str, str], title: str,
                    log: bool = False) -> bool:
    tables = _by_config(results.train, "step", key)
    drawn = False
    for config, table in tables.items():
        if table.dropna(how="all").empty:
            continue
        for run in table.columns:
            ax.plot(table.index, table[run], color=colour.get(config), alpha=0.3, linewidth=0.8)
        ax.plot(table.index, table.mean(axis=1), color=colour.get(config), linewidth=1.8, label=config)
        drawn = True
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if log and drawn:
        values = pd.to_numeric(results.train[key], errors="coerce")
        positive = values[values > 0]
        # A log axis only where the values span a decade: a narrow range reads better on a linear one.
        if len(positive) and positive.max() > 10 * positive.min():
            ax.set_yscale("log")
    ax.grid(alpha=0.3)
    return drawn


def _mark_incidents(axes: list[plt.Axes], results: SuiteResults) -> int:
    incidents = results.incidents
    if incidents.empty or "step" not in incidents.columns:
        return 0
    seen = set()
    for _, incident in incidents.iterrows():
        step = pd.to_numeric(incident.get("step"), errors="coerce")
        if pd.isna(step):
            continue
        severity = incident.get("severity") if incident.get("severity") in SEVERITY_COLOURS else "info"
        for ax in axes:
            ax.axvline(float(step), color=SEVERITY_COLOURS[severity], linestyle="--", linewidth=0.9, alpha=0.7,
                       label=f"incident ({severity})" if severity not in seen and ax is axes[0] else None)
        seen.add(severity)
    return len(incidents)


def paired(results: SuiteResults, colour: dict[str, str], keys: tuple[str, str], titles: tuple[str, str], name: str,
           title: str, caption: str, log: bool = False, incidents: bool = False) -> Figure | None:
    present = [(k, t) for k, t in zip(keys, titles) if _numeric(results.train, k)]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(4.6 * len(present) + 0.6, 3.6), squeeze=False)
    axes = list(axes[0])
    for ax, (key, panel_title) in zip(axes, present):
        _training_panel(ax, results, key, colour, panel_title, log=log)
    marked = _mark_incidents(axes, results) if incidents else 0
    _legend(axes[0])
    if marked:
        caption += f" Dashed vertical lines: the {marked} incident(s), coloured by severity."
    fig.tight_layout()
    return Figure(name, title, caption, _png(fig), tuple(k for k, _ in present))


def unplotted(results: SuiteResults) -> list[tuple[str, str]]:
    """Keys the suite's or a plugin's `plot` asked for that no run recorded, each with who asked."""
    return [(k, source) for k, source in results.plot.items() if not _numeric(results.train, k)]


def diagnostics(results: SuiteResults, colour: dict[str, str]) -> Figure | None:
    present = [(k, t) for k, t in DIAGNOSTICS.items() if _numeric(results.train, k)]
    asked = [(k, source) for k, source in results.plot.items() if k not in DIAGNOSTICS and _numeric(results.train, k)]
    present += [(k, k) for k, _ in asked]
    if not present:
        return None
    cols = min(3, len(present))
    rows = (len(present) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, (key, title) in zip(flat, present):
        # A log axis only for the built-in norms and ratios: a key asked for by `plot` may be negative.
        _training_panel(ax, results, key, colour, title,
                        log=key in DIAGNOSTICS and key.startswith(("weight_norm", "sn_max", "grad_ratio")))
    for ax in flat[len(present):]:
        ax.axis("off")
    _legend(flat[0])
    fig.tight_layout()
    caption = ("Each seed thin, the mean over seeds thick; weight norms, singular values and ratios on a log scale "
               "where they span more than a decade.")
    if asked:
        caption += " Panels asked for with plot: " + ", ".join(f"{k} ({source})" for k, source in asked) + "."
    return Figure("diagnostics", "Further training diagnostics", caption, _png(fig), tuple(k for k, _ in present))


def figures(results: SuiteResults, ranking: Ranking) -> list[Figure]:
    """Every figure the data allows, in the report's order."""
    with plt.rc_context({"axes.formatter.useoffset": False}):  # 1322.4, not "+1.322e3" and 0.4
        return _figures(results, ranking)


def _figures(results: SuiteResults, ranking: Ranking) -> list[Figure]:
    colour = colours(results.configs)
    found: list[Figure | None] = []
    # The primary first (or the key the suite chose, when it has no direction), then every other key
    # with a better direction, in the ranking table's order.
    metric_keys = [k for k in (ranking.metric or ranking.chosen, "kid_mean", ranking.coverage, *ranking.others) if k]
    for key in dict.fromkeys(metric_keys + [k for k in results.metric_keys() if k in ("diversity_ratio", "duplicate_rate")]):
        found.append(metric_curve(results, key, colour))
    found.append(paired(results, colour, ("d_loss", "g_loss"), ("D loss", "G loss"), "losses", "Losses",
                        "D and G losses against steps: each seed thin, the mean over seeds thick."))
    found.append(paired(results, colour, ("d_real", "d_fake"), ("D(x): mean score on real", "D(G(z)): mean score on fake"),
                        "d-outputs", "D's outputs on real and generated data",
                        "D's mean raw output (its logit or critic value, as the loss reads it) on real and on generated "
                        "batches; they separate when D wins."))
    found.append(paired(results, colour, ("grad_norm_d", "grad_norm_g"), ("D gradient norm", "G gradient norm"),
                        "grad-norms", "Gradient norms", "Gradient norms of D and G (log scale where they span more than a decade).", log=True,
                        incidents=True))
    found.append(diagnostics(results, colour))
    return [f for f in found if f is not None]

