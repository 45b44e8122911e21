"""Build a suite's report from its output folder: results.csv and .parquet, figures/, report.md and
report.html (one self-contained file). Every file is written atomically."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ganbench.report.figures import figures
from ganbench.report.load import SuiteResults, load
from ganbench.report.ranking import Ranking, rank
from ganbench.report.render import render_html, render_md
from ganbench.report.view import build_view
from ganbench.rundir import write_atomic

RESULT_FIRST_COLUMNS = ["run_id", "config", "seed", "status", "reason", "steps", "last_step", "wall_s",
                        "sec_per_step", "incidents", "worst_incident", "started", "finished"]


@dataclass(frozen=True)
class Report:
    out: Path
    html: Path
    markdown: Path
    csv: Path
    parquet: Path
    figures: Path
    ranking: Ranking
    results: SuiteResults


def results_table(results: SuiteResults, ranking: Ranking) -> pd.DataFrame:
    """One row per run: identity, status, timing, incidents, final and best metric values, and the
    provenance group of its primary value (-1: not ranked)."""
    table = results.runs.copy()
    first = [c for c in RESULT_FIRST_COLUMNS if c in table.columns]
    table = table[first + [c for c in table.columns if c not in first]]
    groups = {}
    for group in ranking.groups:
        for row in group.rows:
            for seed in row.seeds:
                groups[(row.config, seed)] = group.index
    table["primary_metric"] = ranking.metric
    table["provenance_group"] = [groups.get((c, s), -1) for c, s in zip(table["config"], table["seed"])]
    return table


def _write_bytes(path: Path, data: bytes) -> None:
    write_atomic(path, lambda f: f.write(data))


def build_report(source: Path | str, out: Path | str | None = None) -> Report:
    """Read `source` (a suite output folder) and write the report into `out` (default: `source`)."""
    results = load(Path(source))
    out = Path(out) if out is not None else results.root
    ranking = rank(results)
    drawn = figures(results, ranking)
    view = build_view(results, ranking, drawn)

    table = results_table(results, ranking)
    csv = out / "results.csv"
    _write_bytes(csv, table.to_csv(index=False).encode())
    parquet = out / "results.parquet"
    buffer = io.BytesIO()
    # Free-form columns (reasons, statuses) as strings, so a column that is all None still has a type.
    table.astype({c: "string" for c in table.columns if table[c].dtype == object}).to_parquet(buffer, index=False)
    _write_bytes(parquet, buffer.getvalue())

    images = list(view["figures"]) + [im for c in view["samples"] for im in
                                      [s["image"] for s in c["finals"] if s["image"]] + c["timeline"]]
    for image in images:
        _write_bytes(out / image.path, image.png)
    markdown, html = out / "report.md", out / "report.html"
    _write_bytes(markdown, render_md(view).encode())
    _write_bytes(html, render_html(view).encode())
    return Report(out, html, markdown, csv, parquet, out / "figures", ranking, results)
