"""Build a suite's report from its output folder: results.csv and .parquet, figures/, report.md and
report.html (one self-contained file). Every file is written atomically, and only inside the
report's folder."""
from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ganbench.errors import UsageError
from ganbench.report.damage import Damage, inside
from ganbench.report.figures import figures
from ganbench.report.load import SuiteResults, load
from ganbench.report.ranking import Ranking, rank
from ganbench.report.render import render_html, render_md
from ganbench.report.search import search_view
from ganbench.report.view import build_view, figure_images
from ganbench.rundir import write_atomic

# A spreadsheet reads a cell starting with one of these as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
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


def csv_cell(value: object) -> object:
    """A text cell a spreadsheet shows as text: a leading apostrophe before a formula character.
    Numbers are left alone (a negative number is a number, not a formula)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_table(table: pd.DataFrame) -> pd.DataFrame:
    """results.csv's copy of the table, text columns escaped with `csv_cell`; numeric columns as they are."""
    text = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    return table.assign(**{c: table[c].map(csv_cell) for c in text}) if text else table


def _write_bytes(out: Path, relative: str, data: bytes) -> Path:
    path = out / relative
    # Names are made safe where they are chosen; this catches a folder under `out` that is a link elsewhere.
    if not inside(path.parent, out):
        raise UsageError(f"{path.parent}: leads outside the report folder {out} (a link?); remove it, or pass --out")
    write_atomic(path, lambda f: f.write(data))
    return path


def damage_warnings(damaged: list[Damage]) -> list[str]:
    """One short line per damaged run folder (and for suite.json), for the terminal."""
    by_run: dict[str | None, list[Damage]] = {}
    for d in damaged:
        by_run.setdefault(d.run_id, []).append(d)
    lines = []
    for run_id, found in by_run.items():
        files = ", ".join(dict.fromkeys(d.file or "the folder" for d in found))
        where = "suite.json" if run_id is None else f"runs/{run_id} ({files})"
        first = found[0].reason if len(found[0].reason) <= 100 else found[0].reason[:97] + "..."
        line = f'ganbench: warning: {where} is damaged: {first} (see "Damaged files" in the report)'
        lines.append("".join(c if c.isprintable() else "?" for c in line))
    return lines


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def build_report(source: Path | str, out: Path | str | None = None,
                 warn: Callable[[str], None] | None = _stderr) -> Report:
    """Read `source` (a suite output folder) and write the report into `out` (default: `source`).

    Damaged run files are skipped, listed in the report, and said in one line per run through
    `warn` (default: printed to stderr; None: silent)."""
    results = load(Path(source))
    out = Path(out) if out is not None else results.root
    for folder in ("figures", "figures/samples"):  # before anything is written
        if not inside(out / folder, out):
            raise UsageError(f"{out / folder}: leads outside the report folder {out} (a link?); "
                             "remove it, or pass --out")
    if warn is not None:
        for line in damage_warnings(results.damaged):
            warn(line)
    ranking = rank(results)
    drawn = figures(results, ranking)
    view = build_view(results, ranking, drawn)
    view["search"] = search_view(results)  # None unless the suite ran a [search]
    if view["search"] is not None:
        view["search"]["figures"] = figure_images(view["search"].pop("figure_list"))

    table = results_table(results, ranking)
    csv = _write_bytes(out, "results.csv", csv_table(table).to_csv(index=False).encode())
    buffer = io.BytesIO()
    # Free-form columns (reasons, statuses) as strings, so a column that is all None still has a type.
    # Parquet keeps the values as they are: it is read as data, never as formulas.
    table.astype({c: "string" for c in table.columns if table[c].dtype == object}).to_parquet(buffer, index=False)
    parquet = _write_bytes(out, "results.parquet", buffer.getvalue())

    images = list(view["figures"]) + list((view["search"] or {}).get("figures", [])) + [im for c in view["samples"] for im in
                                      [s["image"] for s in c["finals"] if s["image"]] + c["timeline"]]
    for image in images:
        _write_bytes(out, image.path, image.png)
    markdown = _write_bytes(out, "report.md", render_md(view).encode())
    html = _write_bytes(out, "report.html", render_html(view).encode())
    return Report(out, html, markdown, csv, parquet, out / "figures", ranking, results)
