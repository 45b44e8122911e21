"""`ganbench doctor`: check each architecture × dataset of a suite before hours go into training it.

Soumith Chintala's GAN hacks say to make sure the models are correctly defined (debug D alone on a
plain classification task) and to keep G's last activation matched to the data's range. Each check
is a plugin (`ganbench_register_checks`); this module builds what they look at, runs them, and
prints ✓ / ⚠ / ✗ with the figure behind each verdict. docs/doctor.md describes the built-in checks.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ganbench.errors import UsageError, did_you_mean
from ganbench.params import parse
from ganbench.registry import PluginEntry
from ganbench.state import Run

Status = Literal["ok", "warn", "fail"]
STATUSES: tuple[str, ...] = ("ok", "warn", "fail")  # in order of severity
MARKS = {"ok": "✓", "warn": "⚠", "fail": "✗"}
STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red"}
_BUILT = itertools.count()  # a fresh folder name for each run a check builds


@dataclass
class CheckResult:
    """What a check's `diagnose` returns: its verdict on one architecture × dataset."""

    status: Status  # "ok", "warn" or "fail"; any "fail" makes `ganbench doctor` exit with 1
    figure: str  # the numbers behind the verdict, one line: "held-out accuracy 0.97 (reference CNN 0.95)"
    suggestion: str = ""  # what to do about a warn or a fail, one line; empty when ok
    values: dict[str, Any] = field(default_factory=dict)  # the figures as plain JSON, for --json

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"CheckResult.status = {self.status!r}: one of {', '.join(STATUSES)}")


@dataclass
class CheckSubject:
    """One architecture × dataset of a suite, as a check sees it. `build()` gives a fresh run of
    the first configuration that uses it (its first seed, at the chosen scale, without metrics and
    detectors); `train(run, steps)` trains such a run with the core's own loop."""

    label: str  # "dcgan {width = 32} × mnist5k"
    spec: Any  # the RunSpec `build()` builds: the first config's, first seed
    specs: list[Any]  # every run of the configs it covers (all seeds) at the scale: what the suite will train
    device: torch.device
    workdir: Path  # a temporary folder; each built run gets its own folder inside it

    @property
    def settings(self) -> Any:
        """The first config's `RunSettings` (architecture, dataset, loss, d_batch, ...)."""
        return self.spec.settings

    @property
    def configs(self) -> list[str]:
        """The configurations with this architecture × dataset, in suite order."""
        return list(dict.fromkeys(s.config for s in self.specs))

    def build(self) -> Run:
        """A fresh run: seeded, data loaded, plugins registered, models at initialisation."""
        from ganbench.trainer import build_run

        return build_run(self.spec, self.workdir / f"run-{next(_BUILT)}", self.device)

    def train(self, run: Run, steps: int) -> None:
        """Train `run` for `steps` steps (counting from 0 again) with the trainer's loop: every
        hook fires as in the suite. D's weights accept gradients again afterwards."""
        from ganbench.trainer import train

        core = dataclasses.replace(run.settings.core, steps=steps, log_every=steps, eval_every=steps,
                                   checkpoint_every=steps, grid_size=min(run.settings.grid_size, 16))
        run.settings = dataclasses.replace(run.settings, core=core)
        status, reason = train(run)
        assert run.models is not None
        run.models.discriminator.requires_grad_(True)
        if status not in ("completed",):
            raise RuntimeError(f"{steps} training steps ended {status}: {reason}")


@dataclass
class Finding:
    """One check's result on one subject, as printed and as --json gives it."""

    check: str
    result: CheckResult
    seconds: float

    def as_json(self) -> dict[str, Any]:
        r = self.result
        return {"check": self.check, "status": r.status, "figure": r.figure, "suggestion": r.suggestion,
                "values": r.values, "seconds": round(self.seconds, 2)}


@dataclass
class SubjectReport:
    subject: CheckSubject
    findings: list[Finding]

    @property
    def status(self) -> str:
        return worst(f.result.status for f in self.findings)

    def as_json(self) -> dict[str, Any]:
        s = self.subject.settings
        return {"label": self.subject.label, "architecture": s.architecture.name,
                "architecture_params": _params_json(s.architecture.params), "dataset": s.dataset.name,
                "configs": self.subject.configs, "status": self.status,
                "checks": [f.as_json() for f in self.findings]}


def worst(statuses: Any) -> str:
    return max(statuses, key=STATUSES.index, default="ok")


def _params_json(params: Any) -> dict[str, Any]:
    if params is None or not dataclasses.is_dataclass(params):
        return {}
    return json.loads(json.dumps(dataclasses.asdict(params), default=repr))


def _changed_params(choice: Any) -> str:
    """'{width = 32, d_norm = "layer"}': the parameters that differ from the plugin's defaults."""
    from ganbench.params import format_value

    params = choice.params
    if params is None or not dataclasses.is_dataclass(params):
        return ""
    changed = []
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if value != default:
            changed.append(f"{f.name} = {format_value(value)}")
    return " {" + ", ".join(changed) + "}" if changed else ""


def subjects(suite: Any, scale: str, only: list[str] | None, device: torch.device, workdir: Path) -> list[CheckSubject]:
    """The suite's distinct architecture × dataset pairs (architecture name and parameters), in
    suite order, each with every run of the configurations that use it."""
    groups: dict[tuple[str, str, str], list[Any]] = {}
    for spec in suite.runs(scale, only):
        s = spec.settings
        key = (s.architecture.name, repr(s.architecture.params), s.dataset.name + repr(s.dataset.params))
        groups.setdefault(key, []).append(spec)
    out = []
    for i, specs in enumerate(groups.values()):
        first = specs[0]
        quiet = dataclasses.replace(first.settings, metrics=(), detectors=())
        s = first.settings
        label = f"{s.architecture.name}{_changed_params(s.architecture)} × {s.dataset.name}{_changed_params(s.dataset)}"
        folder = workdir / f"subject-{i}"
        out.append(CheckSubject(label, dataclasses.replace(first, settings=quiet), specs, device, folder))
    return out


def checks(registry: Any, names: list[str] | None, params: dict[str, dict[str, Any]] | None) -> list[tuple[PluginEntry, Any]]:
    """(entry, instance) of each registered check, or of those named, with `params` by check name."""
    table = registry.table["check"]
    for name in [*(names or []), *(params or {})]:
        if name not in table:
            raise UsageError(f'--checks "{name}": unknown check{did_you_mean(name, table)}; '
                             f"available: {', '.join(sorted(table)) or 'none installed'}")
    chosen = [table[n] for n in names] if names else [table[n] for n in sorted(table, key=_builtin_order)]
    out = []
    for entry in chosen:
        values = dict((params or {}).get(entry.name, {}))
        parsed = parse(getattr(entry.cls, "params", None), values, f"check {entry.name}")
        out.append((entry, entry.cls(parsed) if getattr(entry.cls, "params", None) is not None else entry.cls()))
    return out


BUILTIN_ORDER = ("d-classifier", "output-range", "gradient-flow", "batchnorm", "size-speed")


def _builtin_order(name: str) -> tuple[int, str]:
    return (BUILTIN_ORDER.index(name) if name in BUILTIN_ORDER else len(BUILTIN_ORDER), name)


@contextmanager
def one_thread():
    """Doctor runs on one CPU thread: its timings stay comparable, and a loaded machine stays usable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def diagnose(subject: CheckSubject, chosen: list[tuple[PluginEntry, Any]],
             progress: Any = None) -> SubjectReport:
    """Run every check on `subject`. A check that raises is a fail that names the exception and
    where it was raised (a broken architecture usually fails this way)."""
    findings = []
    for entry, check in chosen:
        if progress:
            progress(f"{subject.label}: {entry.name}")
        start = time.perf_counter()
        try:
            result = check.diagnose(subject)
        except UsageError as exc:
            result = CheckResult("fail", f"could not run: {exc}", "fix the suite or the plugin it names")
        except Exception as exc:  # a bug in the architecture, the data or the check: shown, and a fail
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            result = CheckResult("fail", f"raised {type(exc).__name__}: {exc} ({frame.filename}:{frame.lineno})",
                                 "the traceback is in the values under `traceback` (--json)",
                                 {"traceback": "".join(traceback.format_exception(exc))})
        if result is None:
            continue
        if not isinstance(result, CheckResult):
            raise TypeError(f"{entry.source}: check \"{entry.name}\".diagnose returned {result!r}, "
                            "not a ganbench.CheckResult or None")
        findings.append(Finding(entry.name, result, time.perf_counter() - start))
    return SubjectReport(subject, findings)


def run_doctor(suite: Any, scale: str, device: torch.device, only: list[str] | None = None,
               names: list[str] | None = None, params: dict[str, dict[str, Any]] | None = None,
               progress: Any = None) -> list[SubjectReport]:
    """Check every architecture × dataset of `suite` (of the `only` configs) at `scale`."""
    chosen = checks(suite.registry, names, params)
    with one_thread(), tempfile.TemporaryDirectory(prefix="ganbench-doctor-") as tmp:
        return [diagnose(subject, chosen, progress) for subject in subjects(suite, scale, only, device, Path(tmp))]


def exit_code(reports: list[SubjectReport]) -> int:
    """0 when no check failed, else 1."""
    return 1 if any(r.status == "fail" for r in reports) else 0


def as_json(suite: Any, scale: str, device: torch.device, reports: list[SubjectReport]) -> dict[str, Any]:
    return {"suite": suite.name, "scale": scale, "device": str(device), "status": worst(r.status for r in reports),
            "exit_code": exit_code(reports), "subjects": [r.as_json() for r in reports]}


def print_reports(reports: list[SubjectReport], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    for report in reports:
        console.rule(f"[bold]{escape(report.subject.label)}[/bold]", align="left")
        console.print(f"[dim]configs: {escape(', '.join(report.subject.configs))}[/dim]")
        table = Table(show_header=False, box=None, padding=(0, 1), expand=True)
        table.add_column(width=1)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(ratio=3)
        table.add_column(ratio=2, style="dim")
        for f in report.findings:
            r = f.result
            table.add_row(f"[{STYLES[r.status]}]{MARKS[r.status]}[/]", escape(f.check), escape(r.figure),
                          escape(r.suggestion))
        console.print(table)
    counts = {s: sum(f.result.status == s for r in reports for f in r.findings) for s in STATUSES}
    console.print(f"{len(reports)} architecture × dataset pair(s): {counts['ok']} ✓, {counts['warn']} ⚠, "
                  f"{counts['fail']} ✗")
