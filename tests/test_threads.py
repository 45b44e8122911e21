"""Threads per run (`ganbench.threads`): cores shared among the runs at once, the user's choice
first, the passive wait policy for run processes, and what a real `ganbench run` records."""
from __future__ import annotations

import json
import os

import pytest
import torch

from ganbench import threads
from ganbench.cli import main


@pytest.fixture
def no_omp_env(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)


@pytest.mark.parametrize("cores, jobs, expected", [(2, 1, 2), (2, 2, 1), (2, 3, 1), (16, 4, 4), (16, 0, 16), (7, 2, 3)])
def test_cores_are_shared_among_the_runs_at_once(no_omp_env, cores, jobs, expected):
    count, why = threads.per_run(jobs, cores=cores)
    assert count == expected and f"{cores} core(s)" in why


def test_the_users_choice_wins(no_omp_env, monkeypatch):
    assert threads.per_run(2, requested=3, cores=2) == (3, "--threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.per_run(1, cores=16) == (1, "OMP_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")  # not a count: ignored, as OpenMP ignores it
    assert threads.per_run(1, cores=16)[0] == 16


def test_a_busy_cpu_gets_a_note_only_when_ganbench_chose_several_threads(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (2.3, 2.0, 1.5))
    note = threads.busy_warning(2, "2 core(s) / 1 run(s) at once", "cpu")
    assert note and "2.3" in note and "--threads 1" in note
    assert threads.busy_warning(1, "2 core(s) / 2 run(s) at once", "cpu") is None  # one thread: nothing to say
    assert threads.busy_warning(2, "--threads", "cpu") is None  # the user chose
    assert threads.busy_warning(2, "OMP_NUM_THREADS", "cpu") is None
    assert threads.busy_warning(2, "2 core(s) / 1 run(s) at once", "cuda") is None
    monkeypatch.setattr(os, "getloadavg", lambda: (0.4, 0.2, 0.1))  # an idle machine
    assert threads.busy_warning(2, "2 core(s) / 1 run(s) at once", "cpu") is None


def test_passive_wait_is_set_for_the_run_and_put_back(no_omp_env, monkeypatch):
    before = torch.get_num_threads()
    with threads.chosen(jobs=1, requested=1) as choice:
        assert choice.passive and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
        assert torch.get_num_threads() == 1
    assert "OMP_WAIT_POLICY" not in os.environ and torch.get_num_threads() == before
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's own policy is left alone
    with threads.chosen(jobs=1) as choice:
        assert not choice.passive and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_a_run_process_gets_the_chosen_count(tiny_suite, tmp_path, no_omp_env):
    out = tmp_path / "out"
    assert main(["run", str(tiny_suite()), "--out", str(out), "--scale", "default", "--jobs", "1",
                 "--threads", "1"]) == 0
    suite = json.loads((out / "suite.json").read_text())
    assert suite["threads_per_run"] == 1 and suite["threads_why"] == "--threads"
    for run_id in suite["runs"]:
        assert json.loads((out / "runs" / run_id / "env.json").read_text())["threads"] == 1


def test_threads_below_one_are_refused(tiny_suite, tmp_path, capsys):
    assert main(["run", str(tiny_suite()), "--out", str(tmp_path / "out"), "--threads", "0"]) == 2
    assert "--threads 0: must be 1 or more" in capsys.readouterr().err


def test_estimate_notes_a_busy_cpu(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (4.3, 3.0, 2.0))
    note = threads.estimate_warning("cpu")
    assert note is not None and "load average 4.3" in note and "OMP_NUM_THREADS=1" in note
    assert threads.estimate_warning("cuda") is None  # the device's time is not the CPU's
    monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 0.2, 0.1))
    assert threads.estimate_warning("cpu") is None
