"""Searches that train: pruning, a killed search resumed, and two workers on one SQLite study.

Each trial is a 20-step ring8 MLP run (about a second), and its value is a known function of its
D learning rate (`test_search.METRIC_PLUGIN`), so which trial is best or pruned is fixed by the
sampler's seed, not by training noise.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ganbench.cli import main
from ganbench.report import build_report
from ganbench.search_study import open_storage
from test_search import write_search_suite

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _study(db: Path, name: str = "tiny-search/a@default") -> optuna.Study:
    # Through ganbench's own opening, which takes the lock beside the file: polling a database that a
    # `ganbench run` is creating must not race it to create the tables.
    return optuna.load_study(study_name=name, storage=open_storage(f"sqlite:///{db}"))


def _ganbench(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("ganbench")), *args]


def test_pruned_trials_are_reported_as_pruned(tmp_path, one_thread):
    suite = write_search_suite(tmp_path, trials=6, seed=0, extra='pruner = "median"')
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--jobs", "0", "--scale", "default"]) == 0
    trials = _study(out / "search.db").get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned and len(pruned) + len(complete) == 6
    assert not [t for t in trials if t.state == TrialState.FAIL]
    # A pruned trial was worse at its first eval point than the median of the complete ones there.
    for t in pruned:
        step = t.user_attrs["pruned_at"]
        earlier = sorted(c.intermediate_values[step] for c in complete if c.number < t.number)
        assert t.intermediate_values[step] > earlier[len(earlier) // 2 - (len(earlier) % 2 == 0)]
    report = (out / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| a | "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == [str(len(complete)), str(len(pruned)), "0", "0"]  # done, pruned, failed, running
    assert "Pruned trials (stopped early by the pruner; not failures): " + ", ".join(
        f"a #{t.number} (at step {t.user_attrs['pruned_at']})" for t in pruned) in report
    # The best trial (the smallest distance from 1e-3) is re-measured on the final seed.
    best = min(complete, key=lambda t: t.value)
    final = json.loads((out / "suite.json").read_text())["runs"]
    config = json.loads((out / "runs" / final[0] / "config.json").read_text())
    assert config["search"]["trial"] == best.number and config["seed"] == 0
    assert "Hyperparameter search" in (out / "report.html").read_text()


def test_failed_trials_spend_the_budget_and_are_reported_as_failed(tmp_path, one_thread):
    suite = write_search_suite(tmp_path, trials=2, config_extra='search = { "optimizer.d.lr" = { choice = [0.1] } }')
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--jobs", "0", "--scale", "default"]) == 0
    trials = _study(out / "search.db").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("RuntimeError" in json.dumps(t.user_attrs["failed_runs"]) for t in trials)
    assert json.loads((out / "suite.json").read_text())["runs"] == []  # nothing to re-measure
    report = (out / "report.md").read_text()
    assert "| a | 0 | 0 | 2 | 0 | – |" in report
    assert "a: 2 of 2 finished trials failed" in " ".join(report.split())  # the budget curve cannot hide them


@pytest.mark.slow  # trials in run processes, long enough to be stopped: about a minute
def test_a_pruned_trial_is_stopped_at_its_eval_point(tmp_path):
    suite = write_search_suite(tmp_path, trials=4, seed=0, steps=3000, extra='pruner = "median"')
    suite.write_text(suite.read_text().replace("eval_every = 10", "eval_every = 100"))
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--jobs", "1", "--scale", "default"]) == 0
    pruned = [t for t in _study(out / "search.db").get_trials() if t.state == TrialState.PRUNED]
    assert pruned
    for t in pruned:
        status = json.loads((out / "search" / "runs" / t.user_attrs["run_ids"][0] / "status.json").read_text())
        # Stopped by the pruner's signal soon after the eval point that pruned it, not trained to the end.
        assert status["status"] == "interrupted" and status["step"] < 3000


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.slow  # two `ganbench run` processes and a report: about a minute on a loaded 2-core CPU
def test_a_killed_search_resumes_without_repeating_finished_trials(tmp_path):
    suite = write_search_suite(tmp_path, trials=4, steps=300, heartbeat=1)
    suite.write_text(suite.read_text().replace("eval_every = 10", "eval_every = 100"))
    out, db = tmp_path / "out", tmp_path / "out" / "search.db"
    command = [*_ganbench("run", str(suite), "--out", str(out), "--jobs", "0", "--scale", "default")]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def one_done_one_training() -> bool:
        if not db.is_file():
            return False
        try:
            trials = _study(db).get_trials()
        except (KeyError, Exception):  # the study is being created
            return False
        running = [t for t in trials if t.state == TrialState.RUNNING and "run_ids" in t.user_attrs]
        return any(t.state == TrialState.COMPLETE for t in trials) and any(
            (out / "search" / "runs" / t.user_attrs["run_ids"][0] / "metrics.jsonl").is_file() for t in running)

    _wait_for(one_done_one_training, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: t for t in _study(db).get_trials() if t.state == TrialState.COMPLETE}
    killed = [t for t in _study(db).get_trials() if t.state == TrialState.RUNNING]
    assert before and len(killed) == 1
    stamps = {n: (out / "search" / "runs" / t.user_attrs["run_ids"][0] / "status.json").stat().st_mtime_ns
              for n, t in before.items()}
    time.sleep(3.5)  # three missed heartbeats of 1 s: the killed trial is dead
    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    trials = _study(db).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    for n, t in before.items():  # finished trials kept, and their runs not trained again
        assert trials[n].state == TrialState.COMPLETE and trials[n].value == t.value
        path = out / "search" / "runs" / t.user_attrs["run_ids"][0] / "status.json"
        assert path.stat().st_mtime_ns == stamps[n]
    dead = trials[killed[0].number]
    assert dead.state == TrialState.FAIL and "failed_runs" not in dead.user_attrs
    (again,) = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert again.state == TrialState.COMPLETE and again.params == dead.params
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == 4
    # The retried trial's run has the killed one's id: it resumed in the same folder.
    assert again.user_attrs["run_ids"] == killed[0].user_attrs["run_ids"]


ASKER = """
import sys, time
from pathlib import Path
from ganbench.search_study import ask, open_storage, open_studies
from ganbench.suite import load_suite
suite = load_suite(sys.argv[1])
(entry,) = open_studies(suite, "default", None, open_storage(sys.argv[2], 30))
Path(sys.argv[3]).touch()
while not Path(sys.argv[4]).exists():  # both processes ready: ask at the same moments
    time.sleep(0.01)
first = True
while (trial := ask(suite, "default", entry)) is not None:
    entry.study.tell(trial.trial, float(trial.trial.number))
    if first:  # on a loaded machine one process could take the whole budget before the other's first
        Path(sys.argv[5]).touch()  # ask; hold on until the other has asked once, then race freely
        deadline = time.monotonic() + 60
        while not Path(sys.argv[6]).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        first = False
"""


def test_two_processes_asking_at_once_never_exceed_or_share_the_budget(tmp_path):
    suite = write_search_suite(tmp_path, trials=12)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", ASKER, str(suite), url, str(tmp_path / f"ready{i}"),
                               str(tmp_path / "go"), str(tmp_path / f"asked{i}"), str(tmp_path / f"asked{3 - i}")],
                              env=ENV, stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in (1, 2)):
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (tmp_path / "go").touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    trials = _study(tmp_path / "shared.db").get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 12
    assert all(t.user_attrs.get("surplus") for t in trials if t.state != TrialState.COMPLETE)
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == 12
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # both asked


@pytest.mark.slow  # two `ganbench run` workers training 8 trials and building reports: about a minute
def test_two_workers_on_one_sqlite_study_do_not_duplicate_trials(tmp_path):
    suite = write_search_suite(tmp_path, trials=8, steps=60)
    suite.write_text(suite.read_text().replace("eval_every = 10", "eval_every = 30"))
    db = tmp_path / "shared.db"
    procs = [subprocess.Popen([*_ganbench("run", str(suite), "--out", str(tmp_path / f"worker{i}"), "--jobs", "0",
                                          "--scale", "default", "--search-storage", f"sqlite:///{db}")],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    trials = _study(db).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 8
    # Any other trial is a surplus one, asked at the same moment as the budget's last, and never trained.
    assert all(t.user_attrs.get("surplus") for t in trials if t.state != TrialState.COMPLETE)
    assert len({t.number for t in complete}) == 8
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == 8
    for t in complete:  # each trial trained by exactly one worker
        (run_id,) = t.user_attrs["run_ids"]
        where = [i for i in (1, 2) if (tmp_path / f"worker{i}" / "search" / "runs" / run_id / "status.json").is_file()]
        assert len(where) == 1, (t.number, where)
    # Each worker's report, rebuilt now that both are done (the first to finish saw the other's last
    # trial running), reads the shared study: all 8 trials, whichever worker trained them.
    for i in (1, 2):
        build_report(tmp_path / f"worker{i}", warn=None)
        assert "| a | 8 | 0 | 0 | 0 |" in (tmp_path / f"worker{i}" / "report.md").read_text()
    workers = {t.user_attrs["worker"] for t in complete}
    print(f"trials per worker: { {w: sum(t.user_attrs['worker'] == w for t in complete) for w in workers} }")


def test_trials_that_draw_the_same_values_share_one_run(tmp_path, capsys):
    # A space of one value: every trial draws it, so the two trials of each random batch (jobs 2) name
    # the same run (a discrete space does this by chance). The run is trained once (two processes in
    # one folder would mix their records), and every trial reads its value from it.
    suite = write_search_suite(tmp_path, trials=4, seed=3)
    text = suite.read_text()
    suite.write_text(text.partition("[search.space]")[0] + '[search.space]\n"optimizer.d.lr" = { choice = [1e-3] }\n\n'
                     + text[text.index("[[configs]]"):])
    out = tmp_path / "out"
    done = subprocess.run(_ganbench("run", str(suite), "--out", str(out), "--jobs", "2", "--scale", "default"),
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    trials = _study(out / "search.db").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    by_lr: dict[float, set[float]] = {}
    for t in trials:
        by_lr.setdefault(t.params["optimizer.d.lr"], set()).add(t.value)
    assert sum(len(v) for v in by_lr.values()) == len(by_lr)  # equal values, equal results: one run each
    runs = sorted((out / "search" / "runs").iterdir())
    assert len(runs) == len(by_lr) == 1
    for run in runs:  # one trainer per folder: each step logged once
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
                 if json.loads(line)["kind"] == "train"]
        assert steps == sorted(set(steps))
    # `ganbench status` shows the re-measured run and the trial runs, marked as such.
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    final = json.loads((out / "suite.json").read_text())["runs"]
    assert [s["run"] for s in shown] == [*final, *(f"search/{r.name}" for r in runs)]
    assert {s["state"] for s in shown} == {"completed"}


def test_a_misspelt_objective_key_stops_at_the_first_batch(tmp_path, capsys, one_thread):
    # With a direction given, any key loads; a typo would fail every trial and spend the budget. The first
    # batch's eval points show the key is never recorded: one line, exit 2, the trials asked again later.
    suite = write_search_suite(tmp_path, trials=4)
    suite.write_text(suite.read_text().replace('key = "lr_distance"', 'key = "lr_distanse"'))
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--jobs", "0", "--scale", "default"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f'{suite}: search.objective.key = "lr_distanse"' in err and 'did you mean "lr_distance"' in err
    trials = _study(out / "search.db").get_trials()
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 0
    assert [t.state for t in trials if t.state != TrialState.FAIL] == [TrialState.WAITING]  # re-asked, not spent
    first_run = next((out / "search" / "runs").iterdir())
    assert json.loads((first_run / "status.json").read_text())["status"] == "completed"  # kept
    # Fixed, the same command finishes the search and reuses the finished run.
    suite.write_text(suite.read_text().replace('key = "lr_distanse"', 'key = "lr_distance"'))
    assert main(["run", str(suite), "--out", str(out), "--jobs", "0", "--scale", "default"]) == 0
    trials = _study(out / "search.db").get_trials()
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 4
