"""One generated sentence per configuration. Every word comes from the ranking's numbers."""
from __future__ import annotations

from ganbench.report.load import DAMAGED, FAILURES, UNFINISHED
from ganbench.report.ranking import Ranking, Row, convergence_text, direction, label
from ganbench.report.stats import ALPHA, fmt, fmt_p, mean_std


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def failures(row: Row) -> str:
    """'0/3 failed, diverged or collapsed', or '1/3 diverged, 1/3 collapsed'."""
    total = row.planned
    found = [f"{row.status_counts[s]}/{total} {s}" for s in FAILURES if row.status_counts.get(s)]
    text = ", ".join(found) if found else f"0/{total} failed, diverged or collapsed"
    unfinished = [f"{row.status_counts[s]} {s}" for s in (*UNFINISHED, DAMAGED) if row.status_counts.get(s)]
    if row.status_counts.get("stopped"):
        unfinished.insert(0, f"{row.status_counts['stopped']} stopped early")
    return text + (f" ({', '.join(unfinished)})" if unfinished else "")


def comparison(row: Row, ranking: Ranking) -> str:
    baseline = ranking.baseline
    if row.config == baseline:
        return "the baseline"
    c = row.vs_baseline
    if c is None or c.p is None:
        why = c.why if c is not None and c.why else "n/a"
        return f"not tested against {baseline}: {why}"
    side = direction(row, ranking)
    if side is not None:
        return f"{side} than {baseline} (Welch {fmt_p(c.p)})"
    return f"no significant difference from {baseline} (Welch {fmt_p(c.p)}, α = {ALPHA})"


def verdict(row: Row, ranking: Ranking) -> str:
    name = label(ranking.metric)
    if ranking.metric is None:
        score = f"not ranked on {label(ranking.chosen)}" if ranking.chosen else "no metric recorded"
    elif row.final.n == 0:
        score = f"no final {name} (no run was evaluated at its last step)"
    else:
        score = f"final {name} {mean_std(row.final)} over {_seeds(row.final.n)}"
        if row.best.mean is not None and row.best.mean != row.final.mean:
            score += f" (best {fmt(row.best.mean)})"
    parts = [score, failures(row)]
    converged = convergence_text(row, ranking)
    if converged:
        parts.append(converged)
    if row.incidents:
        parts.append(f"{row.incidents} incident{'s' if row.incidents != 1 else ''}"
                     + (f" (worst: {row.worst_incident})" if row.worst_incident else ""))
    group = f" [measured differently: group {row.group + 1}]" if row.group > 0 else ""
    return f"{row.config}: {', '.join(parts)}; {comparison(row, ranking)}{group}"


def verdicts(ranking: Ranking) -> list[str]:
    """One line per ranked row (best first), then the configurations with nothing to rank; first,
    when the baseline is not converged, the line that says nothing was ranked and why."""
    lines = [verdict(row, ranking) for row in ranking.rows]
    if ranking.suppressed:
        lines.insert(0, f"NOT RANKED: {ranking.suppressed}.")
    return lines
