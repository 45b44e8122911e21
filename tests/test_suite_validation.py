"""Every bad suite is refused before training: one line naming the file and the key, exit code 2,
no traceback, and no run directory."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from ganbench.cli import main
from ganbench.errors import UsageError
from ganbench.suite import load_suite

GOOD_HEAD = """
[suite]
name = "bad"
question = "q"
[dataset]
name = "mnist5k"
"""

# (case id, suite text, substrings the one-line error must contain)
BAD_SUITES = [
    ("toml-syntax", GOOD_HEAD + "[[configs]]\nname = = 'a'\nsteps = 1\n", ["TOML syntax error", "line 8"]),
    ("empty-file", "   \n", ["the file is empty"]),
    ("unknown-top-key", GOOD_HEAD + "[defualts]\n[[configs]]\nname='a'\n",
     ["defualts", "unknown table", 'did you mean "defaults"']),
    ("unknown-config-key", GOOD_HEAD + "[[configs]]\nname='a'\nbatch_sise = 3\n",
     ["configs[0].batch_sise", 'did you mean "batch_size"']),
    ("unknown-param", GOOD_HEAD + "[[configs]]\nname='a'\ntricks=[{name='instance-noise', sigmaa=0.1}]\n",
     ["configs[0].tricks[0].sigmaa", 'did you mean "sigma"']),
    ("unknown-plugin", GOOD_HEAD + "[[configs]]\nname='a'\nloss='wgan_gp'\n",
     ["configs[0].loss", "unknown loss", 'did you mean "wgan-gp"', "available:", "hinge"]),
    ("unknown-trick", GOOD_HEAD + "[[configs]]\nname='a'\ntricks=['spectral-nrom']\n",
     ["configs[0].tricks[0]", "unknown trick", 'did you mean "spectral-norm"']),
    ("unknown-dataset", "[suite]\nname='b'\nquestion='q'\n[dataset]\nname='mnist5'\n[[configs]]\nname='a'\n",
     ["dataset.name", "unknown dataset", 'did you mean "mnist5k"']),
    ("wrong-type", GOOD_HEAD + "[[configs]]\nname='a'\nsteps = '100'\n",
     ["configs[0].steps", '"100"', "integer"]),
    ("bool-is-not-int", GOOD_HEAD + "[[configs]]\nname='a'\nbatch_size = true\n",
     ["configs[0].batch_size", "true"]),
    ("negative-lr", GOOD_HEAD + "[defaults]\noptimizer.d = { lr = -1e-4 }\n[[configs]]\nname='a'\n",
     ["defaults.optimizer.d.lr", "-0.0001", "greater than 0"]),
    ("probability-above-1", GOOD_HEAD + "[[configs]]\nname='a'\ntricks=[{name='noisy-labels', p=1.5}]\n",
     ["configs[0].tricks[0].p", "1.5", "less than or equal to 1"]),
    ("nan-literal", GOOD_HEAD + "[[configs]]\nname='a'\noptimizer.g = { lr = nan }\n",
     ["configs[0].optimizer.g.lr", "nan", "not allowed"]),
    ("inf-literal", GOOD_HEAD + "[[configs]]\nname='a'\ntricks=[{name='instance-noise', sigma=inf}]\n",
     ["configs[0].tricks[0].sigma", "inf", "not allowed"]),
    ("incompatible", GOOD_HEAD + "[[configs]]\nname='a'\nloss='wgan'\ntricks=['one-sided-label-smoothing']\n",
     ["configs[0]", "one-sided-label-smoothing", "wgan", "cannot be used"]),
    ("missing-dataset-path", "[suite]\nname='b'\nquestion='q'\n[dataset]\nname='image-folder'\npath='no/such/dir'\n"
     "[[configs]]\nname='a'\n", ["dataset", "image-folder", "no/such/dir"]),
    ("missing-dataset-files", "[suite]\nname='b'\nquestion='q'\n[dataset]\nname='cifar10'\nroot='nowhere'\n"
     "[[configs]]\nname='a'\n", ["dataset", "cifar10", "--data-root"]),
    ("missing-suite-table", "[dataset]\nname='mnist5k'\n[[configs]]\nname='a'\n", ["[suite] is missing"]),
    ("duplicate-config", GOOD_HEAD + "[[configs]]\nname='a'\n[[configs]]\nname='a'\n", ['"a" is used twice']),
    ("bad-baseline", "[suite]\nname='b'\nquestion='q'\nbaseline='vanila'\n[dataset]\nname='mnist5k'\n"
     "[[configs]]\nname='vanilla'\n", ["suite.baseline", 'did you mean "vanilla"']),
    ("missing-plugin-file", "[suite]\nname='b'\nquestion='q'\nplugins=['./nope.py']\n[dataset]\nname='mnist5k'\n"
     "[[configs]]\nname='a'\n", ["suite.plugins[0]", "nope.py", "file not found"]),
    ("points-with-dcgan", "[suite]\nname='b'\nquestion='q'\n[dataset]\nname='ring8'\n[[configs]]\nname='a'\n",
     ["configs[0]", "dcgan", "cannot be used"]),
    ("matrix-unknown-key", GOOD_HEAD + "[[configs]]\nname='a'\nmatrix = { 'optimiser.d.lr' = [1e-4] }\n",
     ["configs[0].matrix", "optimiser.d.lr"]),
    ("matrix-bad-value", GOOD_HEAD + "[[configs]]\nname='a'\nmatrix = { 'optimizer.d.lr' = [1e-4, -2e-4] }\n",
     ['configs[0].matrix."optimizer.d.lr"[1]', "greater than 0"]),
    ("scale-bad-key", GOOD_HEAD + "[scales.smoke]\nloss = 'hinge'\n[[configs]]\nname='a'\n",
     ["scales.smoke.loss", "a scale cannot set this key"]),
    ("unknown-scale", GOOD_HEAD + "[scales.smok]\nsteps = 3\n[[configs]]\nname='a'\n",
     ["scales.smok", 'did you mean "smoke"']),
    ("wgan-gp-batchnorm-critic", GOOD_HEAD + "[[configs]]\nname='a'\nloss='wgan-gp'\n"
     "architecture = { d_norm = 'batch' }\n", ["configs[0]", "wgan-gp", "cannot be used"]),
]


@pytest.mark.parametrize("text,expected", [(t, e) for _, t, e in BAD_SUITES], ids=[c for c, _, _ in BAD_SUITES])
def test_bad_suite_is_one_clean_line(write_suite, tmp_path, capsys, text, expected):
    path = write_suite(text)
    out = tmp_path / "out"
    code = main(["run", str(path), "--out", str(out), "--jobs", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith(f"ganbench: error: {path}"), err
    for piece in expected:
        assert piece in err, f"{piece!r} not in {err!r}"
    assert "Traceback" not in err
    assert not out.exists(), "a refused suite must not create any output"


def test_exit_code_and_no_traceback_in_a_real_process(write_suite, tmp_path):
    path = write_suite(GOOD_HEAD + "[[configs]]\nname='a'\nloss='hinj'\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "ganbench.cli", "run", str(path), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert 'did you mean "hinge"' in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_bad_input_loses_nothing_already_written(tiny_suite, write_suite, tmp_path):
    """A good run's directory survives a later bad invocation into the same output folder."""
    out = tmp_path / "out"
    assert main(["run", str(tiny_suite()), "--out", str(out), "--jobs", "0", "--scale", "default"]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = write_suite(GOOD_HEAD + "[[configs]]\nname='a'\nsteps=-1\n", "bad.toml")
    assert main(["run", str(bad), "--out", str(out), "--jobs", "0"]) == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_validate_accepts_the_shipped_suite(capsys):
    assert main(["validate", "suites/stability.toml"]) == 0
    assert "ok" in capsys.readouterr().out


def test_matrix_expands_and_plugin_defaults_yield_to_the_config(write_suite):
    suite = load_suite(write_suite(GOOD_HEAD + """
[defaults]
optimizer.d = { lr = 2e-4 }
[[configs]]
name = "sweep"
loss = "wgan-gp"
d_updates = 2
matrix = { "optimizer.d.lr" = [1e-4, 3e-4], "architecture.width" = [8, 16] }
"""))
    runs = suite.runs("default")
    assert len(runs) == 4
    lrs = sorted({r.settings.optimizer_d.lr for r in runs})
    assert lrs == [1e-4, 3e-4]
    assert {r.settings.architecture.params.width for r in runs} == {8, 16}
    first = runs[0].settings
    assert first.d_updates == 2  # the config beats the loss's own default (5)
    assert first.optimizer_g.lr == 1e-4 and first.optimizer_g.betas == (0.5, 0.9)  # wgan-gp's defaults
    assert first.architecture.params.d_norm == "layer"
    assert first.origins["d_updates"] == "configs[0].d_updates"
    assert first.origins["optimizer.g.lr"].startswith('(defaults of loss "wgan-gp")')


def test_naming_another_plugin_drops_the_old_ones_params(write_suite):
    suite = load_suite(write_suite(GOOD_HEAD + """
[defaults]
architecture = { name = "dcgan", width = 8 }
[[configs]]
name = "a"
[[configs]]
name = "b"
architecture = { width = 16 }
"""))
    a, b = (r.settings for r in suite.runs("default"))
    assert a.architecture.params.width == 8
    assert b.architecture.name == "dcgan" and b.architecture.params.width == 16


def test_unknown_only_and_scale_are_usage_errors(tiny_suite):
    suite = load_suite(tiny_suite())
    with pytest.raises(UsageError, match='--only "b": no such config'):
        suite.runs("default", ["b"])
    with pytest.raises(UsageError, match='--scale "huge": .* has no such scale; allowed: smoke, default, paper'):
        suite.runs("huge")


def test_a_suite_may_name_its_own_scales(tiny_suite):
    path = tiny_suite()
    path.write_text(path.read_text() + "\n[scales.cpu]\nsteps = 7\neval_samples = 64\n")
    suite = load_suite(path)
    assert list(suite.scales) == ["smoke", "default", "paper", "cpu"]
    (run,) = suite.runs("cpu")
    assert run.scale == "cpu" and run.settings.steps == 7 and run.settings.eval_samples == 64
    # a scale of the suite's own starts from the suite's settings, like default: nothing else changes
    (default,) = suite.runs("default")
    assert run.settings.batch_size == default.settings.batch_size
    assert run.run_id != default.run_id
    with pytest.raises(UsageError, match=r'--scale "cpy": .* no such scale \(did you mean "cpu"\?\); allowed: smoke, default, paper, cpu'):
        suite.runs("cpy")


@pytest.mark.parametrize("name, message", [
    ("defualt", 'scales.defualt: did you mean "default"'),
    ("Big Run", 'scales."Big Run": a scale name is lower-case letters'),
])
def test_a_scale_name_that_is_a_typo_or_not_a_slug_is_refused(tiny_suite, name, message):
    path = tiny_suite()
    path.write_text(path.read_text() + f'\n[scales."{name}"]\nsteps = 7\n')
    with pytest.raises(UsageError, match=re.escape(message)):
        load_suite(path)


def test_a_custom_scale_is_checked_like_the_built_in_ones(tiny_suite):
    path = tiny_suite()
    path.write_text(path.read_text() + "\n[scales.cpu]\nlr = 0.1\n")
    with pytest.raises(UsageError, match="scales.cpu.lr: a scale cannot set this key"):
        load_suite(path)


def test_smoke_scale_is_the_default_without_a_gpu(tiny_suite, tmp_path, capsys):
    out = tmp_path / "out"
    path = tiny_suite()
    path.write_text(path.read_text() + "\n[scales.smoke]\nsteps = 3\n")
    assert main(["run", str(path), "--out", str(out), "--jobs", "0"]) == 0
    err = capsys.readouterr().err
    assert "SMOKE SCALE" in err
    import json

    meta = json.loads((out / "suite.json").read_text())
    assert meta["scale"] == "smoke" and "SMOKE SCALE" in meta["scale_reason"]


def test_file_params_are_relative_to_the_suite(write_suite, tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    path = write_suite(GOOD_HEAD + "[[configs]]\nname='a'\nmetrics = [{ name = 'fid', weights = 'w/incep.pth' }]\n")
    with pytest.raises(UsageError, match=f'weights = "{tmp_path}/w/incep.pth": no such file'):
        load_suite(path)
