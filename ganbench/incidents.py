"""Incidents: what detectors found, written to incidents.jsonl, and the suite's policy for each kind.

Detectors are plugins (`ganbench_detect`); this module only collects their incidents after each
metrics record, adds who raised them and the policy that applies, writes them, and says whether
the run must stop. A kind's policy is `record` (the default, except for divergence) or `stop`;
`stop` ends the run with the status the detector declares for that kind ("collapsed", ...).
Only incidents of warning severity or worse can stop a run.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ganbench.rundir import append_jsonl, read_jsonl
from ganbench.state import Incident, Run

SEVERITIES = ("info", "warning", "critical")  # in increasing order
POLICIES = ("record", "stop")
DEFAULT_POLICY = {"divergence": "stop"}  # every other kind: record


def declared_kinds(detectors: Any) -> dict[str, tuple[str, str]]:
    """kind -> (detector name, status on stop), from the chosen detectors' `kinds`."""
    kinds: dict[str, tuple[str, str]] = {}
    for choice in detectors:
        for kind, status in getattr(choice.cls, "kinds", {}).items():
            kinds[kind] = (choice.name, status)
    return kinds


class IncidentLog:
    """One run's incidents.jsonl, and its stop rule."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.path = run.dir / "incidents.jsonl"
        self.kinds = declared_kinds(run.settings.detectors)
        self.policy = {**DEFAULT_POLICY, **run.settings.policy}

    def check(self, record: dict[str, Any]) -> tuple[str, str] | None:
        """Ask the detectors about `record`; write what they found. Returns (status, reason) when an
        incident's policy stops the run, else None."""
        stop = None
        for found in self.run.hook.ganbench_detect(run=self.run, record=record):
            for incident in found or ():
                entry = self.write(incident, record["step"])
                if (stop is None and entry["policy"] == "stop"
                        and SEVERITIES.index(entry["severity"]) >= SEVERITIES.index("warning")):
                    status = self.kinds[entry["kind"]][1]
                    stop = (status, f"{entry['kind']} at step {entry['step']} (policy stop): {entry['message']}")
        return stop

    def write(self, incident: Incident, step: int) -> dict[str, Any]:
        if not isinstance(incident, Incident):
            raise TypeError(f"a detector returned {incident!r}; ganbench_detect must return a list of ganbench.Incident")
        if incident.kind not in self.kinds:
            raise ValueError(f"a detector raised an incident of kind {incident.kind!r}, which no chosen detector "
                             f"declares in its `kinds` ({', '.join(sorted(self.kinds))})")
        if incident.severity not in SEVERITIES:
            raise ValueError(f"incident {incident.kind!r} has severity {incident.severity!r}; allowed: {', '.join(SEVERITIES)}")
        entry = asdict(incident)
        entry["step"] = step if incident.step is None else incident.step
        entry = {"step": entry["step"], "kind": entry["kind"], "severity": entry["severity"],
                 "detector": self.kinds[incident.kind][0], "policy": self.policy.get(incident.kind, "record"),
                 "message": entry["message"], "evidence": entry["evidence"]}
        append_jsonl(self.path, entry)
        return entry


def incident_summary(path: Path) -> dict[str, Any]:
    """status.json's incident summary: how many, of which kinds, the worst severity."""
    entries = read_jsonl(path)
    by_kind: dict[str, int] = {}
    for e in entries:
        by_kind[e["kind"]] = by_kind.get(e["kind"], 0) + 1
    worst = max((e["severity"] for e in entries), key=SEVERITIES.index, default=None)
    return {"count": len(entries), "by_kind": by_kind, "worst": worst}
