"""End to end through the CLI, with one process per run: 2 configs x 2 seeds on ring8 and on
mnist5k complete and leave complete run directories."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ganbench.rundir import read_jsonl

SUITES = {
    "ring8": """
[suite]
name = "e2e-ring8"
question = "Does spectral norm change an MLP GAN on the ring?"
seeds = [0, 1]
[dataset]
name = "ring8"
[defaults]
architecture = { name = "mlp", width = 64, hidden_layers = 2 }
z_dim = 16
batch_size = 64
steps = 60
log_every = 20
eval_every = 30
grid_size = 256
[[configs]]
name = "vanilla"
[[configs]]
name = "wgan-gp"
loss = "wgan-gp"
d_updates = 2
""",
    "mnist5k": """
[suite]
name = "e2e-mnist5k"
question = "Does label smoothing change a tiny DCGAN?"
seeds = [0, 1]
[dataset]
name = "mnist5k"
[defaults]
architecture = { name = "dcgan", width = 8 }
batch_size = 16
steps = 20
log_every = 5
eval_every = 10
grid_size = 16
eval_samples = 32
real_samples = 64
[[configs]]
name = "vanilla"
[[configs]]
name = "label-smoothing"
tricks = ["one-sided-label-smoothing"]
""",
}


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(SUITES))
def test_suite_runs_end_to_end_in_processes(tmp_path, dataset):
    suite = tmp_path / f"{dataset}.toml"
    suite.write_text(SUITES[dataset])
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "ganbench.cli", "run", str(suite), "--out", str(out),
                           "--scale", "default"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "suite.json").read_text())
    assert len(meta["runs"]) == 4
    for run_id in meta["runs"]:
        run = out / "runs" / run_id
        assert json.loads((run / "status.json").read_text())["status"] == "completed"
        config = json.loads((run / "config.json").read_text())
        assert config["run_id"] == run_id and config["dataset"]["name"] == dataset
        assert json.loads((run / "env.json").read_text())["seed"] == config["seed"]
        records = read_jsonl(run / "metrics.jsonl")
        steps = config["settings"]["steps"]
        assert [r["step"] for r in records if r["kind"] == "eval"] == [steps // 2, steps]
        assert len([r for r in records if r["kind"] == "train"]) == steps // config["settings"]["log_every"]
        assert sorted(p.name for p in (run / "samples").iterdir()) == [f"step-{steps // 2:07d}.png",
                                                                        f"step-{steps:07d}.png"]
        assert (run / "checkpoints" / "generator.pt").stat().st_size > 0
    # a second invocation finds every run completed and trains nothing
    again = subprocess.run([sys.executable, "-m", "ganbench.cli", "run", str(suite), "--out", str(out),
                            "--scale", "default"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0
    # on a pipe every message is one line, however long (rich would wrap it at 80 columns)
    skipped = f"4 run(s) already completed in {out / 'runs'}; skipping them"
    assert len(skipped) > 80 and skipped in again.stderr.splitlines(), again.stderr[-3000:]
