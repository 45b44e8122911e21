"""The Optuna side of a search: the storage, one study per configuration, trials asked with
per-trial sampler seeds, the budget counted in the database, heartbeats, intermediate values read
from the runs' eval records for the pruner, and each trial told how it ended. `search.py` drives it.

Resuming: a finished trial (complete, pruned, failed) is never asked again. A running trial whose
worker died stops sending heartbeats; after three missed ones `fail_stale_trials` marks it failed
and Optuna enqueues a copy with the same values, whose runs have the same ids and so resume from
their checkpoints.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from ganbench.errors import UsageError
from ganbench.rundir import read_jsonl, read_status
from ganbench.search_space import Search, flat_values, is_finite, trial_layer
from ganbench.suite import Config, RunSpec, Suite

optuna.logging.set_verbosity(optuna.logging.WARNING)

DB_FILE = "search.db"
POLL_S = 1.0  # how often the monitor reads the trial runs' eval records
MISSED_HEARTBEATS = 3  # a running trial is dead after this many heartbeat intervals without one


@contextmanager
def quiet() -> Iterator[None]:
    """Heartbeats and fail_stale_trials are Optuna's way to re-ask a dead worker's trial; it marks them
    experimental and expects them under Study.optimize, which an ask-and-tell driver is not."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


@contextmanager
def creating(url: str) -> Iterator[None]:
    """Two workers opening a new SQLite file at once would both create its tables (and one fail):
    a file lock beside it lets one create them and the other find them."""
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        yield
        return
    from filelock import FileLock

    path = Path(url[len("sqlite:///"):])
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        yield


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / DB_FILE).resolve()}"


def storage_url(search: Search, out: Path, given: str | None) -> str:
    """--search-storage, else search.storage, else SQLite in the output folder."""
    return given or search.table.storage or default_storage(out)


def open_storage(url: str, heartbeat: int | None = None) -> optuna.storages.RDBStorage:
    """The study database; with `heartbeat`, running trials that stop beating are failed and re-asked."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Workers share one file: wait for another's write instead of failing with "database is locked".
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    try:
        with quiet(), creating(url):
            if heartbeat is not None:  # (experimental in Optuna: quiet() keeps its warning out of the console)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)
                kwargs.update(heartbeat_interval=heartbeat, grace_period=heartbeat * MISSED_HEARTBEATS,
                              heartbeat_stale_trial_callback=retry)
            for attempt in range(5):
                try:
                    return optuna.storages.RDBStorage(url, **kwargs)
                except Exception as exc:  # sqlalchemy's OperationalError: another program (optuna-dashboard,
                    # a script) created the tables at the same moment without ganbench's lock; they exist now
                    if "already exists" not in str(exc) or attempt == 4:
                        raise
                    time.sleep(0.5)
    except (optuna.exceptions.StorageInternalError, ValueError, ImportError) as exc:
        raise UsageError(f"search storage {url}: cannot open it ({type(exc).__name__}: {exc}); give an Optuna RDB URL "
                         "like sqlite:////abs/path/search.db or postgresql://user@host/db") from None


def study_name(suite: Suite, config: str, scale: str) -> str:
    return f"{suite.name}/{config}@{scale}"


def sampler_for(search: Search, number: int) -> optuna.samplers.BaseSampler:
    """Trial `number`'s sampler, seeded from (seed, number): a resumed study samples trial k as an
    uninterrupted one would, and two workers never draw from one random stream."""
    seed = int(np.random.SeedSequence([search.table.seed, number]).generate_state(1)[0])
    if search.table.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def pruner_for(search: Search, scale: str) -> optuna.pruners.BasePruner:
    name = search.table.pruner
    if name == "median":  # Optuna's default of 5 finished trials first, or a fifth of a smaller budget
        return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(1, search.trials(scale) // 5)))
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial spends the budget: a dead worker's trial (re-asked) or a surplus one does not."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING):
        return True
    return trial.state == TrialState.FAIL and "failed_runs" in trial.user_attrs


@dataclass
class Study:
    config: Config
    study: optuna.Study
    space: dict[str, optuna.distributions.BaseDistribution]
    known: dict[str, Any]  # the configuration's flat settings, for indexed keys
    storage: optuna.storages.RDBStorage  # for heartbeats, which Optuna keys by the trial's database id
    done: bool = False  # no budget left for this worker to ask

    def counted(self) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False) if counts(t)]


@dataclass
class Trial:
    study: Study
    trial: optuna.Trial
    specs: list[RunSpec]
    reported: set[int] = field(default_factory=set)  # eval steps already told to Optuna
    pruned_at: int | None = None  # the eval step at which the pruner stopped it


def open_studies(suite: Suite, scale: str, only: list[str] | None, storage: optuna.storages.RDBStorage) -> list[Study]:
    search: Search = suite.search
    studies = []
    for config in suite.configs:
        if only and config.name not in only:
            continue
        name = study_name(suite, config.name, scale)
        study = optuna.create_study(study_name=name, storage=storage, direction=search.objective.optuna_direction,
                                    load_if_exists=True, sampler=sampler_for(search, 0), pruner=pruner_for(search, scale))
        space = search.spaces[config.name]
        described = {**search.describe(scale), "space": {k: optuna.distributions.distribution_to_json(d)
                                                    for k, d in sorted(space.items())}}
        recorded = study.user_attrs.get("search")
        differs = differs_from(recorded, described) if recorded is not None else []
        if differs == ["objective"] and recorded["objective"].get("direction") == described["objective"].get("direction") \
                and not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            differs = []  # nothing was measured with the old key (a misspelt one stops the first batch): take the new
        if differs:
            raise UsageError(f'study "{name}" in the search storage was run with other search settings '
                             f"({', '.join(differs)} differ); give another --out or --search-storage, or delete the study")
        if recorded != described:  # new, or a larger (or smaller) budget: it continues the same search
            study.set_user_attr("search", described)
        known = flat_values(suite.settings(config, scale))
        studies.append(Study(config, study, space, known, storage))
    return studies


def ask(suite: Suite, scale: str, entry: Study) -> Trial | None:
    """A new trial of `entry`'s study (or a dead one's re-ask), with its runs; None when the budget is spent."""
    search: Search = suite.search
    budget = search.trials(scale)
    trials = entry.study.get_trials(deepcopy=False)
    if sum(counts(t) for t in trials) >= budget and not any(t.state == TrialState.WAITING for t in trials):
        entry.done = True
        return None
    with quiet():
        trial = entry.study.ask()
    entry.storage.record_heartbeat(trial._trial_id)  # Optuna has no public name for the id
    before = sum(counts(t) for t in entry.study.get_trials(deepcopy=False) if t.number < trial.number)
    if before >= budget:  # another worker asked the last trial of the budget at the same moment
        trial.set_user_attr("surplus", True)
        entry.study.tell(trial, state=TrialState.FAIL)
        entry.done = True
        return None
    entry.study.sampler = sampler_for(search, trial.number)
    params = {key: suggest(trial, key, dist) for key, dist in entry.space.items()}
    where = f"{suite.path}: search trial {trial.number} of {entry.config.name}"
    settings = suite.settings(Config(entry.config.name, entry.config.where,
                                     [*entry.config.layers, trial_layer(params, entry.known, where)]), scale)
    record = {"study": entry.study.study_name, "trial": trial.number, "params": params}
    specs = [RunSpec(suite.name, suite.path, entry.config.name, seed, scale, settings, record)
             for seed in search.trial_seeds]
    trial.set_user_attr("run_ids", [s.run_id for s in specs])
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    return Trial(entry, trial, specs)


def suggest(trial: optuna.Trial, key: str, dist: optuna.distributions.BaseDistribution) -> Any:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high)
    return trial.suggest_float(key, dist.low, dist.high, log=dist.log)


def eval_values(run_dir: Path, key: str) -> dict[int, float]:
    """step -> the run's value of `key` at each eval point (metrics.jsonl), finite ones only."""
    return {r["step"]: float(r[key]) for r in read_jsonl(run_dir / "metrics.jsonl")
            if r.get("kind") == "eval" and isinstance(r.get("step"), int) and is_finite(r.get(key))}


def objective_value(run_dir: Path, search: Search) -> float | None:
    values = eval_values(run_dir, search.objective.key)
    if not values:
        return None
    if search.objective.at == "last":
        return values[max(values)]
    return (min if search.objective.direction == "min" else max)(values.values())


class Monitor(threading.Thread):
    """While a batch trains: heartbeats for its trials, and their intermediate values, read at the
    runs' eval points, told to Optuna; a trial the pruner stops has its run processes stopped."""

    def __init__(self, trials: list[Trial], out: Path, search: Search, children: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.trials, self.out, self.search, self.children = trials, out, search, children
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        last_beat = 0.0
        while not self.halt.wait(POLL_S):
            # A failed look (a busy database) is said by the driver after the batch; the monitor goes
            # on, since a trial without heartbeats would be taken for dead and asked again elsewhere.
            try:
                if time.monotonic() - last_beat >= self.search.table.heartbeat:
                    for t in self.trials:
                        t.study.storage.record_heartbeat(t.trial._trial_id)
                    last_beat = time.monotonic()
                self.poll()
            except Exception as exc:  # noqa: BLE001 - see above
                self.error = self.error or exc

    def poll(self) -> None:
        for t in self.trials:
            if t.pruned_at is not None:
                continue
            per_run = [eval_values(self.out / "runs" / s.run_id, self.search.objective.key) for s in t.specs]
            common = set.intersection(*(set(v) for v in per_run)) - t.reported
            for step in sorted(common):
                t.trial.report(float(np.mean([v[step] for v in per_run])), step)
                t.reported.add(step)
                # The last eval point is the trial's value: a trial that got there is complete.
                if step < t.specs[0].settings.steps and t.trial.should_prune():
                    t.pruned_at = step
                    for spec in t.specs:  # a run stops at its next step boundary (ends "interrupted")
                        proc = self.children.get(spec.run_id)
                        if proc is not None and proc.exitcode is None:
                            os.kill(proc.pid, signal.SIGTERM)
                    break


def tell(t: Trial, out: Path, search: Search, stopping: bool) -> str:
    """Record a finished batch member in the study; returns its state's name."""
    study = t.study.study
    if t.pruned_at is None:
        Monitor([t], out, search, {}).poll()  # eval points written since the monitor's last look
    if t.pruned_at is not None:
        t.trial.set_user_attr("pruned_at", t.pruned_at)
        study.tell(t.trial, state=TrialState.PRUNED)
        return "pruned"
    statuses = {s.run_id: read_status(out / "runs" / s.run_id) or {} for s in t.specs}
    values = [objective_value(out / "runs" / s.run_id, search) for s in t.specs]
    if all(st.get("status") == "completed" for st in statuses.values()) and all(v is not None for v in values):
        study.tell(t.trial, float(np.mean(values)))
        return "complete"
    if stopping or any(st.get("status") in ("interrupted", "running", None) for st in statuses.values()):
        # Not the settings' fault: the same values are asked again, and their runs resume.
        t.trial.set_user_attr("interrupted", True)
        frozen = study.tell(t.trial, state=TrialState.FAIL)
        study.add_trial(optuna.create_trial(state=TrialState.WAITING, params=frozen.params,
                                            distributions=frozen.distributions,
                                            system_attrs={"failed_trial": frozen.number}))
        return "interrupted"
    t.trial.set_user_attr("failed_runs", {rid: f"{st.get('status', 'no status')}: {st.get('reason') or 'no value'}"
                                          for rid, st in statuses.items()})
    study.tell(t.trial, state=TrialState.FAIL)
    return "failed"


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return study.best_trial if complete else None


def differs_from(recorded: dict[str, Any], described: dict[str, Any]) -> list[str]:
    """The search settings that make a study another search; the budget may change."""
    return sorted(k for k in described if k != "trials" and recorded.get(k) != described[k])
