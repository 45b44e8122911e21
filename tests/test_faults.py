"""Faults lose nothing a checkpoint holds: a disk that fills up mid-run (a real tmpfs when this
runs as root, an injected OSError otherwise), an unusable --out, and files written with the
user's umask."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import torch

from ganbench import checkpoint, rundir
from ganbench.cli import main
from test_resume import GANBENCH, PARITY_SUITE, finish, wait_for_step

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TWO_CONFIGS = PARITY_SUITE.replace("steps = 36", "steps = 300").replace("seeds = [3]", "seeds = [3, 4]")


def mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, options) -> a tmpfs mounted in tmp_path (unmounted afterwards), or a skip."""
    mounted = []

    def mount(name: str, options: str) -> Path:
        where = tmp_path / name
        if not mount_tmpfs(where, options):
            pytest.skip("needs root and tmpfs mounts (the injected-OSError test covers the same code)")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def keep_full(filler: Path, done: threading.Event) -> None:
    """Take every byte that is left, and again whenever something frees some (a failed write that removes its
    temporary file) until `done`: the disk stays full for the rest of the run, as a real full disk would."""
    with open(filler, "wb", buffering=0) as f:
        while not done.is_set():
            try:
                while True:
                    f.write(b"\0" * (1 << 16))
            except OSError:
                done.wait(0.02)


def assert_whole(run_dir: Path) -> None:
    """Every file of the run is one a reader can use: no half-written line, no stray temporary file."""
    if (run_dir / "metrics.jsonl").exists():
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            json.loads(line)
    if (run_dir / "status.json").exists():
        assert isinstance(json.loads((run_dir / "status.json").read_text()), dict)
    if (run_dir / checkpoint.FILE).exists():
        torch.load(run_dir / checkpoint.FILE, weights_only=True)
    assert not [p for p in run_dir.rglob("*.tmp")]


@pytest.mark.slow
def test_a_disk_that_fills_up_fails_the_run_in_one_line_and_keeps_its_checkpoint(tmp_path, tmpfs):
    disk = tmpfs("disk", "size=64m")
    suite = tmp_path / "suite.toml"
    suite.write_text(TWO_CONFIGS)
    cmd = [*GANBENCH, "run", str(suite), "--out", str(disk / "out"), "--scale", "default", "--only", "plain",
           "--jobs", "1"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for_step(disk / "out", 12, proc)
    filler = disk / "filler"
    done = threading.Event()
    keeper = threading.Thread(target=keep_full, args=(filler, done))
    keeper.start()
    try:
        code, err = finish(proc)
    finally:
        done.set()
        keeper.join()
    flat = " ".join(err.split())  # rich wraps its lines at 80 columns on a pipe
    assert code == 1, err  # failed runs: a crash-worthy exit, not a traceback
    assert "Traceback" not in err and "IndexError" not in err
    assert flat.count("No space left on device") >= 2, err  # both seeds were tried: the suite went on
    assert "the report could not be written" in flat, err
    runs = sorted((disk / "out" / "runs").iterdir())
    trained = [r for r in runs if (r / checkpoint.FILE).exists()]
    assert len(trained) == 1  # the run that was training when the disk filled kept its checkpoint
    assert torch.load(trained[0] / checkpoint.FILE, weights_only=True)["meta"]["step"] >= 10
    for run in runs:
        assert_whole(run)

    filler.unlink()  # space again: the same command resumes what the checkpoints hold
    code, err = finish(subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    assert code == 0, err
    assert "resume from their checkpoints" in err
    for run in sorted((disk / "out" / "runs").iterdir()):
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == "completed" and status["step"] == 300
        assert_whole(run)


def test_an_oserror_while_writing_fails_the_run_and_the_suite_goes_on(tmp_path, monkeypatch, one_thread, capsys):
    """The same path without root: the third record of the first run cannot be written."""
    suite = tmp_path / "suite.toml"
    suite.write_text(PARITY_SUITE.replace("steps = 36", "steps = 12").replace("seeds = [3]", "seeds = [3, 4]"))
    real_append, calls = rundir.append_jsonl, []

    def full_disk(path, record):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(path))
        real_append(path, record)

    monkeypatch.setattr("ganbench.trainer.append_jsonl", full_disk)
    code = main(["run", str(suite), "--out", str(tmp_path / "out"), "--scale", "default", "--only", "plain",
                 "--jobs", "0"])
    err = capsys.readouterr().err
    assert code == 1
    statuses = [json.loads((r / "status.json").read_text()) for r in sorted((tmp_path / "out" / "runs").iterdir())]
    assert sorted(s["status"] for s in statuses) == ["completed", "failed"]
    (failed,) = [s for s in statuses if s["status"] == "failed"]
    assert failed["reason"].startswith("OSError: [Errno 28] No space left on device")
    # --jobs 0 is for debugging: it shows the failed run's traceback (from error.txt), and nothing else's
    assert err.count("Traceback (most recent call last)") == 1 and "failed; its traceback (also in" in err


@pytest.mark.parametrize("where", ["below-a-file", "read-only"])
def test_an_unusable_out_is_refused_before_anything_trains(tmp_path, tmpfs, capsys, where):
    suite = tmp_path / "suite.toml"
    suite.write_text(PARITY_SUITE)
    if where == "below-a-file":
        (tmp_path / "a-file").write_text("x")
        out = tmp_path / "a-file" / "out"
    else:
        out = tmpfs("ro", "ro,size=1m") / "out"
    code = main(["run", str(suite), "--out", str(out), "--scale", "default", "--jobs", "0"])
    err = capsys.readouterr().err
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"ganbench: error: --out {out}: cannot write there (")
    assert ("Not a directory" if where == "below-a-file" else "Read-only file system") in line


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_files_follow_the_users_umask(tmp_path, one_thread, umask, mode):
    suite = tmp_path / "suite.toml"
    suite.write_text(PARITY_SUITE.replace("steps = 36", "steps = 4").replace("eval_every = 12", "eval_every = 4"))
    before = os.umask(umask)
    try:
        out = tmp_path / f"out-{uuid.uuid4().hex[:6]}"
        assert main(["run", str(suite), "--out", str(out), "--scale", "default", "--only", "plain", "--jobs", "0"]) == 0
    finally:
        os.umask(before)
    files = [p for p in out.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"report.html", "report.md", "results.csv", "config.json", "status.json", "metrics.jsonl",
            "generator.pt", "last.pt", "suite.json"} <= names
    wrong = {str(p.relative_to(out)): oct(p.stat().st_mode & 0o777) for p in files if p.stat().st_mode & 0o777 != mode}
    assert not wrong, wrong
