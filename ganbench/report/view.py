"""What the templates show: the suite, ranking, verdicts, figures, incidents and samples as plain,
already formatted values. Both templates (HTML and Markdown) read the same view; escaping is the
templates' job (`render.py`), so nothing here is escaped.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ganbench.report.figures import Figure, unplotted
from ganbench.report.damage import safe_name
from ganbench.report.load import DAMAGED, FAILURES, UNFINISHED, SuiteResults
from ganbench.report.ranking import Ranking, Row, direction, label
from ganbench.report.stats import ALPHA, CONFIDENCE, TEST_NAME, fmt, fmt_p, interval, mean_std
from ganbench.report.verdict import verdicts

SMOKE_BANNER = ("SMOKE SCALE: every run was shortened to the suite's smoke settings. These results are indicative "
                "only; run with --scale default (on a GPU) for numbers worth reporting.")
TIMELINE_POINTS = 8  # sample grids over time shown per configuration (evenly spaced, always the last)
MAX_INCIDENTS = 500  # incident rows in the timeline; the rest are counted
VERSION_KEYS = ("ganbench", "python", "torch", "torchvision", "torch_fidelity", "pluggy", "cuda", "platform", "git_sha")


@dataclass(frozen=True)
class Image:
    """A PNG the report shows: embedded in HTML, a file beside the Markdown."""

    path: str  # relative to the report's folder (the Markdown links it)
    png: bytes
    alt: str
    caption: str = ""

    @property
    def uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if isinstance(value, float):
        return fmt(value, 4)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def evidence_text(evidence: Any) -> str:
    if isinstance(evidence, dict):
        return ", ".join(f"{k} = {_text(v)}" for k, v in evidence.items())
    return "" if evidence is None or (isinstance(evidence, float) and pd.isna(evidence)) else _text(evidence)


def versions(results: SuiteResults) -> list[tuple[str, str]]:
    """Each version key with every value the runs' env.json files record (several when they differ)."""
    found: list[tuple[str, str]] = []
    envs = [e for e in results.envs.values() if e]
    keys = list(VERSION_KEYS) + sorted({k for e in envs for k in e if "version" in k and k not in VERSION_KEYS})
    for key in keys:
        values = list(dict.fromkeys(_text(e.get(key)) for e in envs if e.get(key) is not None))
        if values:
            found.append((key, ", ".join(values) + (" (differs between runs)" if len(values) > 1 else "")))
    return found


def status_line(results: SuiteResults) -> str:
    counts = results.runs["status"].value_counts().to_dict() if not results.runs.empty else {}
    parts = [f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return f"{len(results.runs)} runs: {', '.join(parts) if parts else 'none'}"


def row_view(row: Row, ranking: Ranking) -> dict[str, Any]:
    c = row.vs_baseline
    if row.config == ranking.baseline:
        vs = "baseline"
    elif c is None or c.p is None:
        vs = c.why if c is not None and c.why else "n/a"
    else:
        side = direction(row, ranking)
        vs = fmt_p(c.p) + (f" ({side})" if side else " (n.s.)")
    unfinished = {s: row.status_counts.get(s, 0) for s in ("stopped", *UNFINISHED, DAMAGED) if row.status_counts.get(s)}
    return {
        "rank": row.rank if row.rank is not None else "–",
        "config": row.config,
        "baseline": row.config == ranking.baseline,
        "seeds": f"{row.scored}/{row.planned}",
        "final": mean_std(row.final),
        "final_ci": interval(row.final),
        "best": mean_std(row.best),
        "best_ci": interval(row.best),
        "kid": mean_std(row.kid),
        "coverage": mean_std(row.coverage),
        "failures": f"{row.failures}/{row.planned}",
        "failure_detail": ", ".join(f"{row.status_counts[s]} {s}" for s in FAILURES if row.status_counts.get(s)),
        "unfinished": ", ".join(f"{n} {s}" for s, n in unfinished.items()),
        "sec_per_step": fmt(row.sec_per_step),
        "incidents": str(row.incidents) + (f" ({row.worst_incident})" if row.worst_incident else ""),
        "vs": vs,
        "significant": bool(c is not None and c.significant()),
        "converged": (("no" if row.unconverged else "yes") + f" ({row.scored - row.unconverged}/{row.scored})"
                      if ranking.guard is not None and row.scored else "–"),
        "unconverged": bool(row.unconverged),
        "coverage_unconverged": (f"not converged in {row.coverage_unconverged}/{row.scored}"
                                 if row.coverage_unconverged else ""),
        "others": [{"value": mean_std(row.others[k]),
                    "unconverged": (f"not converged in {row.others_unconverged[k]}/{row.others[k].n}"
                                    if row.others_unconverged.get(k) else "")}
                   for k in ranking.others],
    }


def ranking_view(ranking: Ranking) -> dict[str, Any]:
    groups = []
    for group in ranking.groups:
        title = "" if group.index == 0 else f"Group {group.index + 1}: measured differently from group 1"
        groups.append({"title": title, "differs": [(k, _text(v)) for k, v in group.differs.items()],
                       "rows": [row_view(r, ranking) for r in group.rows]})
    notes = [
        (f"Not ranked: the baseline is not converged (see the verdict). Listed by the final {label(ranking.metric)} "
         f"({ranking.why}), without ranks or tests." if ranking.suppressed and ranking.metric else
         f"Ranked by the final {label(ranking.metric)} ({ranking.why})." if ranking.metric else ranking.why),
        f"“final” is the value at each run's last step; “best” the best over its evaluations; both are the mean ± "
        f"sample std over the seeds whose last step was evaluated (“seeds”), with a {CONFIDENCE:.0%} confidence "
        f"interval of the mean (Student's t, n − 1 degrees of freedom; it needs 2 seeds).",
        f"“failures”: failed, diverged or collapsed runs out of all runs of the configuration; their values are "
        f"not averaged in.",
        f"“vs {ranking.baseline}”: {TEST_NAME.replace(', ', ' (')}) on the final values per seed, α = {ALPHA}, not corrected for "
        f"multiple comparisons; “n.s.”: no significant difference.",
    ]
    if ranking.others:
        notes.append(f"{', '.join(label(k) for k in ranking.others)}: the final value of each further metric that "
                     "declares a better direction, mean ± sample std over the same seeds (over the runs that have "
                     "one, when nothing is ranked); not used for the rank.")
    if ranking.guard is not None:
        g = ranking.guard
        notes.append(f"“converged”: runs whose final {label(g.key)} is {g.bound}, the bound the metric "
                     f"declares ({g.why}). A configuration with a run {g.missed} gets no rank and no test; when the "
                     f"baseline has one, nothing is ranked.")
    if len(ranking.groups) > 1:
        notes.append(f"The runs measured {label(ranking.metric)} in {len(ranking.groups)} different ways (their "
                     "provenance differs), so they are ranked in separate tables; values in different tables are "
                     "not comparable.")
    return {
        "metric": label(ranking.metric or ranking.chosen),
        "better": ("nothing ranked" if ranking.metric is None else
                   "lower is better" if ranking.better == "min" else "higher is better"),
        "coverage": label(ranking.coverage) if ranking.coverage else None, "baseline": ranking.baseline,
        "test": TEST_NAME, "groups": groups, "has_kid": any(r.kid.n for r in ranking.rows), "unranked": [row_view(r, ranking) for r in ranking.unranked],
        "notes": notes,
        "guarded": ranking.guard is not None,
        "suppressed": ranking.suppressed,
        "others": [{"label": label(k), "better": "lower is better" if ranking.directions.get(k) == "min" else
                    "higher is better"} for k in ranking.others],
    }


def incidents_view(results: SuiteResults) -> tuple[list[dict[str, str]], list[tuple[str, int]]]:
    frame = results.incidents
    if frame.empty:
        return [], []
    frame = frame.assign(_order=pd.to_numeric(frame["step"], errors="coerce")).sort_values(["config", "seed", "_order"])
    rows = [{"config": _text(i["config"]), "seed": _text(i["seed"]), "run_id": _text(i["run_id"]),
             "step": _text(i["step"]), "kind": _text(i["kind"]), "severity": _text(i["severity"]),
             "detector": _text(i["detector"]), "policy": _text(i["policy"]), "message": _text(i["message"]),
             "evidence": evidence_text(i["evidence"])} for _, i in frame.head(MAX_INCIDENTS).iterrows()]
    by_kind = frame["kind"].astype(str).value_counts()
    return rows, [(str(k), int(v)) for k, v in by_kind.items()]


def _spaced(points: list[tuple[int, Path]], n: int) -> list[tuple[int, Path]]:
    if len(points) <= n:
        return points
    picks = sorted({round(i * (len(points) - 1) / (n - 1)) for i in range(n)})
    return [points[i] for i in picks]


def config_views(results: SuiteResults) -> list[dict[str, Any]]:
    """Per configuration: each seed's final sample grid and one seed's grids over time."""
    views = []
    for config in results.configs:
        runs = results.runs[results.runs["config"] == config]
        kind = next((k for k in runs.get("data_kind", []) if isinstance(k, str)), "image")
        noun = "scatter" if kind == "points" else "sample grid"
        finals, timeline, timeline_seed = [], [], None
        for _, run in runs.iterrows():
            points = results.samples.get(run["run_id"], [])
            entry = {"seed": _text(run["seed"]), "run_id": run["run_id"], "status": run["status"], "image": None}
            if points:
                step, path = points[-1]
                entry["image"] = sample_image(run["run_id"], step, path, f"{config} seed {_text(run['seed'])}, step {step}")
            finals.append(entry)
            if not timeline and points:
                timeline_seed = _text(run["seed"])
                timeline = [im for s, p in _spaced(points, TIMELINE_POINTS)
                            if (im := sample_image(run["run_id"], s, p, f"{config} seed {timeline_seed}, step {s}"))]
        views.append({"name": config, "noun": noun, "finals": finals, "timeline": timeline,
                      "timeline_seed": timeline_seed})
    return views


def sample_image(run_id: str, step: int, path: Path, alt: str) -> Image | None:
    """A run's sample grid, copied beside the Markdown under the run's id (load.py checked both)."""
    try:
        png = path.read_bytes()
    except OSError:  # removed since the folder was read: a rerun is rewriting it
        return None
    return Image(f"figures/samples/{safe_name(run_id)}/step-{step:07d}.png", png, alt, f"step {step}")


def figure_images(figures: list[Figure]) -> list[Image]:
    """Each figure as figures/<name>.png; names are made safe file names, and unique."""
    images, used = [], set()
    for figure in figures:
        name = stem = safe_name(figure.name)
        n = 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        images.append(Image(f"figures/{name}.png", figure.png, figure.title, figure.caption))
    return images


def damaged_view(results: SuiteResults) -> list[dict[str, str]]:
    return [{"where": d.where, "reason": d.reason} for d in results.damaged]


def runs_view(results: SuiteResults, ranking: Ranking) -> list[dict[str, str]]:
    key = ranking.metric
    rows = []
    for _, run in results.runs.iterrows():
        rows.append({
            "config": _text(run["config"]), "seed": _text(run["seed"]), "run_id": _text(run["run_id"]),
            "status": _text(run["status"]), "reason": "" if run.get("reason") is None or pd.isna(run.get("reason")) else str(run["reason"]),
            "steps": f"{_text(run.get('last_step'))}/{_text(run.get('steps'))}",
            "final": fmt(run.get(f"final_{key}"), 5) if key and not pd.isna(run.get(f"final_{key}")) else "–",
            "wall_s": _text(run.get("wall_s")),
            "incidents": _text(run.get("incidents")),
            "problem": run["status"] in (*FAILURES, *UNFINISHED, DAMAGED),
        })
    return rows


def provenance_view(results: SuiteResults) -> list[dict[str, Any]]:
    """Each metric key's provenance, as recorded by the first run that has it (differences show in the ranking)."""
    seen: dict[str, dict[str, Any]] = {}
    for run_id in results.runs["run_id"]:
        for key, prov in results.provenance.get(run_id, {}).items():
            seen.setdefault(key, prov)
    by_source: dict[str, dict[str, Any]] = {}
    keys_of: dict[str, list[str]] = {}
    for key, prov in seen.items():
        ident = json.dumps(prov, sort_keys=True, default=str)
        by_source.setdefault(ident, prov)
        keys_of.setdefault(ident, []).append(label(key))
    return [{"metrics": ", ".join(keys_of[i]), "fields": [(k, _text(v)) for k, v in prov.items()]}
            for i, prov in by_source.items()]


def _instant(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def started_times(results: SuiteResults) -> tuple[str, str]:
    """When the folder's first run started, and when its last `ganbench run` started where that was later.

    suite.json's "started" is rewritten by every invocation, so a folder resumed or extended with --only
    would otherwise show the last invocation's time as the start of runs that trained hours before it."""
    invoked = results.suite.get("started")
    starts = [(m, t) for t in [*results.runs.get("started", []), invoked] if (m := _instant(t)) is not None]
    if not starts:
        return "", ""
    first = min(starts)[1]
    later = invoked if isinstance(invoked, str) and invoked != first and _instant(invoked) is not None else ""
    return first, later


def build_view(results: SuiteResults, ranking: Ranking, figures: list[Figure]) -> dict[str, Any]:
    suite = results.suite
    unfinished = results.runs["status"].isin(UNFINISHED) if not results.runs.empty else pd.Series(dtype=bool)
    finished = [f for f in results.runs.get("finished", []) if isinstance(f, str)]
    first_started, invoked = started_times(results)
    incidents, incidents_by_kind = incidents_view(results)
    notes = list(results.notes)
    if results.unlisted:
        notes.append(f"{len(results.unlisted)} run folder(s) under runs/ are not listed in suite.json (from an earlier "
                     f"invocation, or other settings) and are left out: {', '.join(results.unlisted[:10])}"
                     + (" …" if len(results.unlisted) > 10 else ""))
    return {
        "suite": {k: _text(suite.get(k)) if suite.get(k) not in (None, "") else "" for k in
                  ("name", "question", "expects", "scale", "scale_reason", "device", "device_name", "started",
                   "suite_file", "suite_file_in_repo", "baseline")},
        "seeds": ", ".join(str(s) for s in suite.get("seeds") or []),
        "configs": ", ".join(results.configs),
        "finished": max(finished) if finished else "",
        "first_started": first_started,
        "invoked": invoked,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "smoke": suite.get("scale") == "smoke",
        "smoke_banner": SMOKE_BANNER,
        "status_line": status_line(results),
        "unfinished": int(unfinished.sum()),
        "versions": versions(results),
        "ranking": ranking_view(ranking),
        "verdicts": verdicts(ranking),
        "figures": figure_images(figures),
        "not_plotted": [f"{key} ({source})" for key, source in unplotted(results)],
        "incidents": incidents,
        "incidents_total": len(results.incidents),
        "incidents_by_kind": incidents_by_kind,
        "max_incidents": MAX_INCIDENTS,
        "samples": config_views(results),
        "runs": runs_view(results, ranking),
        "provenance": provenance_view(results),
        "notes": notes,
        "damaged": damaged_view(results),
    }
