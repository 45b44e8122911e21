"""A failed run names what failed it: the plugin (registered name and file), the hook, the step and
the phase, in status.json, the report and the console line, which points to error.txt; `--jobs 0`
prints the traceback. A hook argument the hookspec does not have is one line, with a suggestion."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from ganbench import cli, trainer
from ganbench.cli import main
from ganbench.report.load import load
from ganbench.suite import load_suite
from ganbench.trainer import execute

CPU = torch.device("cpu")

# A third-party trick in its own file. HOOK is replaced by one hookimpl that raises at step 5.
BOOM = '''
"""A trick that fails on purpose."""
import torch
import ganbench


def helper(batch):
    return torch.cat([batch.real, torch.zeros(1)])  # wrong shapes: torch raises, deep inside torch


class Boom:
    """Raises in one hook."""
    name = "boom"

HOOK

@ganbench.hookimpl
def ganbench_register_tricks():
    return [Boom]
'''

HOOKS = {
    "d": ("""
    @ganbench.hookimpl
    def ganbench_discriminator_inputs(self, step, batch):
        if step.index == 5 and step.phase == "d":
            raise ValueError("boom at step 5")
""", "ganbench_discriminator_inputs", 5),
    "g": ("""
    @ganbench.hookimpl
    def ganbench_discriminator_inputs(self, step, batch):
        if step.index == 5 and step.phase == "g":
            raise ValueError("boom at step 5")
""", "ganbench_discriminator_inputs", 5),
    "eval": ("""
    @ganbench.hookimpl
    def ganbench_evaluate(self, step):
        if step == 4:
            raise ValueError("boom at step 4")
""", "ganbench_evaluate", 4),
    "setup": ("""
    @ganbench.hookimpl
    def ganbench_configure_models(self, models):
        raise ValueError("boom in set-up")
""", "ganbench_configure_models", 0),
    "end": ("""
    @ganbench.hookimpl
    def ganbench_run_end(self, status):
        raise ValueError(f"boom after a run that {status}")
""", "ganbench_run_end", 8),
}
# Steps between log records: a run failing at step 5 has logged only step 4.
SETTINGS = "steps = 8\nlog_every = 4\neval_every = 4"


def boom_suite(tiny_suite, tmp_path: Path, hook: str) -> Path:
    (tmp_path / "boom.py").write_text(BOOM.replace("HOOK", hook))
    path = tiny_suite('tricks = ["boom"]')
    text = path.read_text().replace("seeds = [0]", 'seeds = [0]\nplugins = ["./boom.py"]')
    path.write_text(re.sub(r"steps = 2\nlog_every = 1\neval_every = 2", SETTINGS, text))
    return path


def run_one(path: Path, tmp_path: Path) -> tuple[str, dict, Path]:
    (spec,) = load_suite(path).runs("default")
    run_dir = tmp_path / "run"
    return execute(spec, run_dir, CPU), json.loads((run_dir / "status.json").read_text()), run_dir


def raise_line(tmp_path: Path) -> int:
    lines = (tmp_path / "boom.py").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if "raise ValueError" in line)


@pytest.mark.parametrize("phase", HOOKS)
def test_status_json_names_the_plugin_hook_step_and_phase(phase, tiny_suite, tmp_path, one_thread):
    code, hook, step = HOOKS[phase]
    status, recorded, run_dir = run_one(boom_suite(tiny_suite, tmp_path, code), tmp_path)
    assert status == "failed"
    boom = str((tmp_path / "boom.py").resolve())
    assert recorded["failure"] == {
        "error": "ValueError", "message": recorded["failure"]["message"], "plugin": "trick:boom", "hook": hook,
        "file": boom, "line": raise_line(tmp_path), "step": step, "phase": phase, "traceback": "error.txt",
    }
    assert recorded["step"] == step  # the steps done, not 0
    assert f"in {hook} of trick:boom, {boom}:{raise_line(tmp_path)}" in recorded["reason"]
    assert recorded["reason"].startswith(f"ValueError: {recorded['failure']['message']} (")
    assert (run_dir / "error.txt").read_text().rstrip().endswith(f"ValueError: {recorded['failure']['message']}")


def test_an_error_raised_deep_in_torch_is_charged_to_the_hook_that_called_it(tiny_suite, tmp_path, one_thread):
    code = """
    @ganbench.hookimpl
    def ganbench_discriminator_inputs(self, step, batch):
        if step.index == 5:
            helper(batch)
"""
    _, recorded, _ = run_one(boom_suite(tiny_suite, tmp_path, code), tmp_path)
    failure = recorded["failure"]
    assert failure["error"] == "RuntimeError"
    assert (failure["plugin"], failure["hook"], failure["step"], failure["phase"]) == (
        "trick:boom", "ganbench_discriminator_inputs", 5, "d")
    lines = (tmp_path / "boom.py").read_text().splitlines()
    assert "helper(batch)" in lines[failure["line"] - 1]  # the hook's line, not the helper's or torch's


def test_a_failure_in_the_core_names_no_plugin(tiny_suite, tmp_path, one_thread, monkeypatch):
    # The trick's hook runs in every step, and returns before the core fails: it is not to blame.
    code = """
    @ganbench.hookimpl
    def ganbench_discriminator_inputs(self, step, batch):
        batch.real = batch.real * 1.0
"""
    real_score = trainer.score
    calls = []

    def score(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("a bug in the core")
        return real_score(*args, **kwargs)

    monkeypatch.setattr(trainer, "score", score)
    status, recorded, _ = run_one(boom_suite(tiny_suite, tmp_path, code), tmp_path)
    assert status == "failed"
    failure = recorded["failure"]
    assert failure["plugin"] is None and failure["hook"] is None
    assert (failure["step"], failure["phase"]) == (5, "d")
    assert recorded["reason"] == "RuntimeError: a bug in the core (during the D update of step 5)"


def test_the_console_line_points_to_error_txt_and_jobs_0_prints_the_traceback(tiny_suite, tmp_path, one_thread,
                                                                             capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")  # rich wraps a non-terminal at 80 columns: keep each line whole
    monkeypatch.setattr(cli, "_report_after_run", lambda out, console: None)  # figures take seconds; load() below
    path = boom_suite(tiny_suite, tmp_path, HOOKS["d"][0])
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--scale", "default", "--jobs", "0"]) == 1
    err = capsys.readouterr().err
    (run_dir,) = (out / "runs").iterdir()
    assert "Traceback (most recent call last):" in err
    assert 'raise ValueError("boom at step 5")' in err and "ValueError: boom at step 5" in err
    boom = (tmp_path / "boom.py").resolve()
    line = next(line for line in err.splitlines() if line.startswith("a seed 0: failed"))
    assert re.fullmatch(
        rf"a seed 0: failed in [\d.]+ s: ValueError: boom at step 5 \(in ganbench_discriminator_inputs of "
        rf"trick:boom, {re.escape(str(boom))}:\d+, during the D update of step 5\); "
        rf"traceback: {re.escape(str(run_dir / 'error.txt'))}", line), line
    (row,) = load(out).runs.to_dict("records")  # what the report's runs table shows
    assert row["last_step"] == 5  # the steps done, though the last train record is at step 4
    assert row["reason"] == json.loads((run_dir / "status.json").read_text())["reason"]
    assert "in ganbench_discriminator_inputs of trick:boom" in row["reason"]


def test_a_hook_argument_the_hookspec_lacks_is_one_line_with_a_suggestion(tiny_suite, tmp_path, capsys):
    code = """
    @ganbench.hookimpl
    def ganbench_discriminator_loss(self, run, step, scorez):
        return None
"""
    path = boom_suite(tiny_suite, tmp_path, code)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    boom = (tmp_path / "boom.py").resolve()
    assert err.count("\n") == 1, err
    def_line = next(i for i, line in enumerate(boom.read_text().splitlines(), 1) if "scorez" in line)
    assert err == (f'ganbench: error: file {boom}: trick "boom": ganbench_discriminator_loss ({boom}:{def_line}) '
                   'takes "scorez" (did you mean "scores"?), which the hook does not pass; '
                   "ganbench_discriminator_loss passes: run, step, scores, targets\n")


def test_a_misspelt_module_level_hook_is_one_line_too(tmp_path, tiny_suite, capsys):
    path = boom_suite(tiny_suite, tmp_path, "")
    boom = tmp_path / "boom.py"
    boom.write_text(boom.read_text() + "\n\n@ganbench.hookimpl\ndef ganbench_register_trick():\n    return []\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"file {boom.resolve()}: ganbench_register_trick ({boom.resolve()}:" in err
    assert 'is not a ganbench hook (did you mean "ganbench_register_tricks"?)' in err
