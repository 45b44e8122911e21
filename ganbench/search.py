"""Run a suite's [search]: one Optuna study per configuration, each with the same budget of trials,
then the best trial of each re-measured on fresh seeds (Lucic et al. 2018's protocol).

The studies live in an Optuna RDB storage: SQLite at <out>/search.db by default, or the URL of
`--search-storage` / `search.storage`, which several `ganbench run` workers may share (each with its
own --out folder). Trials are asked in `search_study.py`, their settings become RunSpecs (the
trial's values enter the resolved settings and hence the run id), and they train through
`executor.run_suite` into <out>/search/runs/. The final runs, one per final seed at the best trial's
settings, go to <out>/runs/ and are what suite.json lists and the ordinary report ranks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ganbench.errors import UsageError, did_you_mean
from ganbench.rundir import read_json, read_jsonl
from ganbench.search_space import Search, trial_layer
from ganbench.search_study import (DB_FILE, Monitor, Study, Trial, ask, best_trial, counts, default_storage,
                                   open_storage, open_studies, quiet, storage_url, study_name, tell)
from ganbench.suite import Config, RunSpec, Suite

TRIAL_RUNS = "search"  # trial runs live in <out>/search/runs/, apart from the final runs the report ranks


def run_trials(suite: Suite, scale: str, only: list[str] | None, out: Path, device: Any, jobs: int, console: Any,
               suite_stop: Any, threads: int | None, storage: optuna.storages.RDBStorage, **run_options: Any
               ) -> tuple[list[Study], dict[str, int]]:
    """Ask and train trials, round-robin over the configurations, a batch of about `jobs` runs at a time,
    until every study's budget is spent (or a stop). Returns the studies and how many trials ended how."""
    from ganbench.executor import run_suite

    search: Search = suite.search
    studies = open_studies(suite, scale, only, storage)
    tally = {"complete": 0, "pruned": 0, "failed": 0, "interrupted": 0}
    trial_out = out / TRIAL_RUNS
    slots = max(1, jobs // search.table.seeds_per_trial)
    while not suite_stop.stop.requested:
        for entry in studies:  # before every batch: another worker's trials may have died since the last one
            with quiet():
                optuna.storages.fail_stale_trials(entry.study)
        # Random search learns nothing from finished trials: a whole round (one trial of every
        # configuration) at once keeps every job slot busy while the slow losses train. TPE reads the
        # finished trials, so it asks only as many as there are slots.
        per_batch = max(slots, sum(not s.done for s in studies)) if search.table.sampler == "random" else slots
        batch: list[Trial] = []
        while len(batch) < per_batch and not all(s.done for s in studies):
            for entry in studies:
                if not entry.done and len(batch) < per_batch:
                    trial = ask(suite, scale, entry)
                    if trial is not None:
                        batch.append(trial)
        if not batch:
            break
        names = ", ".join(f"{t.study.config.name} #{t.trial.number}" for t in batch)
        console.print(f"[bold]search[/bold]: trials {names}")
        monitor = Monitor(batch, trial_out, search, suite_stop.children)
        monitor.start()
        # Two trials of a discrete space can draw the same values, so the same runs: each run is
        # trained once, and every trial that names it reads its value from it.
        specs = list({s.run_id: s for t in batch for s in t.specs}.values())
        try:
            run_suite(suite, specs, trial_out, device, jobs=jobs, console=console,
                      suite_stop=suite_stop, threads=threads, **run_options)
        finally:
            monitor.halt.set()
            monitor.join()
        if monitor.error is not None:
            console.print(f"[yellow]search: the trial monitor stopped: {monitor.error!r}[/yellow]")
        missing = objective_missing(suite, specs, trial_out)
        if missing:  # a misspelt key would fail every trial and spend the whole budget: stop at the first batch
            for t in batch:
                tell(t, trial_out, search, stopping=True)  # asked again, with the same values, next time
            raise UsageError(missing)
        for t in batch:
            tally[tell(t, trial_out, search, suite_stop.stop.requested)] += 1
    return studies, tally


def objective_missing(suite: Suite, specs: list[RunSpec], out: Path) -> str | None:
    """One line when the batch's runs recorded eval points but none holds the objective's key."""
    key = suite.search.objective.key
    seen: set[str] = set()
    for spec in specs:
        for record in read_jsonl(out / "runs" / spec.run_id / "metrics.jsonl"):
            if record.get("kind") == "eval":
                if key in record:
                    return None
                seen.update(k for k, v in record.items() if isinstance(v, (int, float)) and k != "step")
    if not seen:  # no eval point yet (every run failed early): nothing to judge by
        return None
    return (f'{suite.path}: search.objective.key = "{key}": the first trials\' eval points do not record it'
            f'{did_you_mean(key, sorted(seen))}; they record: {", ".join(sorted(seen))}. Their runs are kept, '
            "and the same trials are asked again when you run the suite after fixing the key")


def final_specs(suite: Suite, scale: str, studies: list[Study], console: Any) -> list[RunSpec]:
    """The final runs: each finished study's best settings on the fresh final seeds."""
    search: Search = suite.search
    specs = []
    for entry in studies:
        trials = entry.study.get_trials(deepcopy=False)
        running = [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        if running or sum(counts(t) for t in trials) < search.trials(scale):
            console.print(f"[yellow]search: {entry.config.name}: {len(running)} trial(s) still running or waiting "
                          "elsewhere; run the suite again afterwards to re-measure its best trial[/yellow]")
            continue
        best = best_trial(entry.study)
        if best is None:
            console.print(f"[yellow]search: {entry.config.name}: no trial completed; nothing to re-measure[/yellow]")
            continue
        where = f"{suite.path}: best trial {best.number} of {entry.config.name}"
        settings = suite.settings(Config(entry.config.name, entry.config.where,
                                         [*entry.config.layers, trial_layer(best.params, entry.known, where)]), scale)
        record = {"study": entry.study.study_name, "trial": best.number, "params": best.params, "final": True}
        specs += [RunSpec(suite.name, suite.path, entry.config.name, seed, scale, settings, record)
                  for seed in search.final_seeds]
    return specs


def suite_record(suite: Suite, scale: str, url: str, out: Path, only: list[str] | None) -> dict[str, Any]:
    """suite.json's "search": where the studies are, and the search's settings."""
    shown = url if url != default_storage(out) else DB_FILE  # relative: the folder may move
    return {**suite.search.describe(scale), "storage": shown, "trial_runs": f"{TRIAL_RUNS}/runs",
            "studies": {c.name: study_name(suite, c.name, scale) for c in suite.configs if not only or c.name in only}}


def listed_runs(out: Path, scale: str, specs: list[RunSpec]) -> list[str]:
    """suite.json's runs: the new final runs, and the earlier ones at this scale of the configurations
    that have none new (another worker's finished study, or --only)."""
    earlier = read_json(out / "suite.json")
    runs = earlier.get("runs") if isinstance(earlier, dict) and earlier.get("scale") == scale else None
    renewed = {s.config for s in specs}
    kept = []
    for run_id in runs if isinstance(runs, list) else []:
        config = read_json(out / "runs" / str(run_id) / "config.json")
        if isinstance(run_id, str) and isinstance(config, dict) and config.get("config") not in renewed:
            kept.append(run_id)
    return list(dict.fromkeys([*kept, *(s.run_id for s in specs)]))


def run(args: Any, console: Any, suite: Suite, out: Path, device: Any, scale: str, scale_reason: str,
        suite_stop: Any, choice: Any) -> int:
    """`ganbench run` of a suite with [search], inside the output folder's lock: the trials, then the
    final runs, then the report. Exit codes as for any suite (1 when a final run failed)."""
    from rich.markup import escape

    from ganbench.cli import _report_after_run, _stopped
    from ganbench.environment import device_name
    from ganbench.executor import run_suite, summary_table
    from ganbench.rundir import write_json
    from ganbench.trainer import now

    search: Search = suite.search
    if getattr(args, "detach", False):
        raise UsageError(f"--detach: {suite.path} has a [search], whose driver asks each batch of trials after the "
                         "last one's values are in; run it without --detach (in tmux, or with nohup)")
    url = storage_url(search, out, getattr(args, "search_storage", None))
    storage = open_storage(url, search.table.heartbeat)
    configs = [c.name for c in suite.configs if not args.only or c.name in args.only]
    console.print(f"[bold]{escape(suite.name)}[/bold]: {escape(suite.header.question)}")
    console.print(f"search: {search.trials(scale)} {search.table.sampler} trials × {search.table.seeds_per_trial} seed(s) "
                  f"for each of {len(configs)} configs, then the best on seeds {list(search.final_seeds)}, at scale "
                  f"[bold]{scale}[/bold] on {device_name(device)} → {out} (studies in {escape(url)})")
    console.print(f"[dim]{choice.threads} CPU thread(s) per run ({choice.why})[/dim]")
    out.mkdir(parents=True, exist_ok=True)
    started = now()

    def write_suite(specs: list[RunSpec]) -> None:
        listed = listed_runs(out, scale, specs)
        write_json(out / "suite.json", {
            "name": suite.name, "question": suite.header.question, "expects": suite.header.expects,
            **suite.file_record(), "baseline": suite.baseline, "seeds": list(search.final_seeds),
            "configs": suite.config_names(), "scale": scale, "scale_reason": scale_reason, "device": str(device),
            "device_name": device_name(device), "started": started, "runs": listed,
            "threads_per_run": choice.threads, "threads_why": choice.why, **suite.report_control(),
            "search": suite_record(suite, scale, url, out, args.only)})

    write_suite([])
    options: dict[str, Any] = {"restart": args.restart, "reuse_completed": args.reuse_completed}
    if getattr(args, "executor", None) is not None or getattr(args, "executor_options", None):
        options.update(executor=args.executor, executor_options=args.executor_options)  # Ray, SLURM
    studies, tally = run_trials(suite, scale, args.only, out, device, args.jobs, console, suite_stop, choice.threads,
                                storage, **options)
    console.print(f"search: this worker's trials: {tally['complete']} complete, {tally['pruned']} pruned, "
                  f"{tally['failed']} failed, {tally['interrupted']} interrupted (asked again on the next run)")
    specs = [] if suite_stop.stop.requested else final_specs(suite, scale, studies, console)
    write_suite(specs)
    outcomes = run_suite(suite, specs, out, device, jobs=args.jobs, console=console, suite_stop=suite_stop,
                         threads=choice.threads, **options) if specs else []
    if outcomes:
        console.print(summary_table(outcomes))
    _report_after_run(out, console)
    if suite_stop.stop.requested:
        return _stopped(suite_stop.stop, outcomes, specs, out)
    return 1 if any(o.status == "failed" for o in outcomes) else 0
