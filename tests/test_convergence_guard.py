"""The convergence guard: metrics declare when their counts can be trusted (`ganbench.Convergence`),
and the report marks runs below the floor and does not rank on a guarded value while the baseline
is below it. A real unconverged run (20 steps on ring8) and hand-written run folders (test
doubles from test_report.py) for converged and mixed suites."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import ganbench
from ganbench.cli import main
from ganbench.report import build_report
from ganbench.report.load import load
from ganbench.report.ranking import rank
from ganbench.report.verdict import verdicts
from test_report import fake_run_dir, fake_suite_dir

TINY_RING = """
[suite]
name = "guard"
question = "Is a 20-step GAN converged on the ring?"
seeds = [0, 1]
baseline = "vanilla"
[dataset]
name = "ring8"
[defaults]
architecture = { name = "mlp", width = 16, hidden_layers = 2, d_dropout = 0.0 }
metrics = [{ name = "mixture-modes", samples = 500 }]
z_dim = 8
batch_size = 32
steps = 20
log_every = 10
eval_every = 10
grid_size = 16
[[configs]]
name = "vanilla"
[[configs]]
name = "spectral-norm"
tricks = ["spectral-norm"]
"""

CONVERGENCE = {"key": "high_quality_fraction", "at_least": 0.5, "guards": ["modes_covered"],
               "why": "smears cover every mode"}
MODES_PROVENANCE = {"protocol": "VEEGAN", "rule": "veegan", "samples": 2500, "convergence": CONVERGENCE}


# Stacked MNIST's bound is a ceiling: a distance to the real digits (plugins/metrics/classifier.py).
DIGIT_CONVERGENCE = {"key": "digit_fd", "at_most": 180.0, "guards": ["modes_covered", "mode_kl"],
                     "why": "blobs are read with high confidence"}
STACKED_PROVENANCE = {"coverage_rule": "VEEGAN/PacGAN", "generated_samples": 1000, "convergence": DIGIT_CONVERGENCE}


def mixture_run(root: Path, config: str, seed: int, modes: float, quality: float,
                key: str = "high_quality_fraction", provenance: dict = MODES_PROVENANCE) -> str:
    """A finished run folder whose last eval point says `modes` covered with `key` at `quality` (a
    test double)."""
    run_id = fake_run_dir(root, config, seed, fid=[modes - 1, modes], metric="modes_covered",
                          provenance=provenance)
    path = root / "runs" / run_id / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        if record["kind"] == "eval":
            record[key] = quality
            record["provenance"] = {"mixture-modes": provenance}
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    status = json.loads((root / "runs" / run_id / "status.json").read_text())
    better = "min" if key == "digit_fd" else "max"
    status["metrics"] = {"final": {"modes_covered": modes, key: quality},
                         "best": {}, "better": {"modes_covered": "max", key: better}}
    (root / "runs" / run_id / "status.json").write_text(json.dumps(status))
    return run_id


def suite_of(root: Path, runs: dict[str, list[tuple[float, float]]], **kind) -> Path:
    ids = [mixture_run(root, config, seed, modes, quality, **kind)
           for config, values in runs.items() for seed, (modes, quality) in enumerate(values)]
    return fake_suite_dir(root, ids, baseline="vanilla", configs=list(runs))


STACKED = {"key": "digit_fd", "provenance": STACKED_PROVENANCE}


def test_the_guard_fires_on_a_real_unconverged_run(tmp_path):
    suite = tmp_path / "guard.toml"
    suite.write_text(TINY_RING)
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--scale", "default", "--jobs", "0"]) == 0
    results = load(out)
    assert not results.runs["converged"].astype(bool).any()  # 20 steps: nowhere near the modes
    checks = results.convergence[results.runs["run_id"].iloc[0]]
    assert [(c.key, c.limit, c.ceiling, c.guards) for c in checks] == [("high_quality_fraction", 0.5, False, ("modes_covered",))]
    ranking = rank(results)
    assert ranking.metric == "modes_covered" and ranking.suppressed
    assert all(r.rank is None for r in ranking.rows)
    assert all(r.vs_baseline is None or r.vs_baseline.p is None for r in ranking.rows)
    lines = verdicts(ranking)
    assert lines[0].startswith("NOT RANKED: the baseline vanilla is not converged")
    assert "not converged in 2/2 runs" in lines[1]
    markdown = (out / "report.md").read_text()
    assert "> **NOT RANKED: the baseline vanilla is not converged" in markdown
    html = (out / "report.html").read_text()
    assert 'id="not-ranked"' in html and "NOT RANKED" in html
    csv = pd.read_csv(out / "results.csv")
    assert list(csv["converged"]) == [False] * 4


def test_the_guard_stays_quiet_on_converged_runs(tmp_path):
    root = suite_of(tmp_path, {"vanilla": [(6, 0.9), (5, 0.8), (6, 0.95)],
                               "pacgan2": [(8, 0.9), (7, 0.85), (8, 0.9)]})
    report = build_report(root)
    ranking = report.ranking
    assert ranking.suppressed is None and ranking.guard.key == "high_quality_fraction"
    assert [(r.config, r.rank) for r in ranking.rows] == [("pacgan2", 1), ("vanilla", 2)]
    assert ranking.rows_of("pacgan2")[0].vs_baseline.p is not None
    markdown = report.markdown.read_text()
    assert "NOT RANKED" not in markdown and "CAUTION" not in markdown
    assert "| yes (3/3) |" in markdown
    assert "converged (high-quality fraction" in " ".join(verdicts(ranking))


def test_equal_finals_share_a_rank(tmp_path):
    # The unrolled ring: every configuration covers 8 of 8 modes in every seed. That is a tie, not an order.
    root = suite_of(tmp_path, {"vanilla": [(8, 0.9), (8, 0.8), (8, 0.95)],
                               "simultaneous": [(8, 0.85), (8, 0.9), (8, 0.8)],
                               "unrolled": [(8, 0.9), (8, 0.85), (8, 0.9)],
                               "spectral-norm": [(7, 0.9), (7, 0.85), (6, 0.9)]})
    ranking = rank(load(root))
    assert [r.rank for r in ranking.rows] == [1, 1, 1, 4]
    assert ranking.rows[-1].config == "spectral-norm"
    assert "| 1 | **vanilla** |" in build_report(root).markdown.read_text()


def test_a_config_below_the_floor_gets_no_rank_and_no_test(tmp_path):
    # The smear case: wgan-gp "covers" all 8 modes at 3% quality. Ranked on modes it would win.
    root = suite_of(tmp_path, {"vanilla": [(6, 0.9), (5, 0.8), (6, 0.95)],
                               "wgan-gp": [(8, 0.03), (8, 0.04), (8, 0.9)],
                               "spectral-norm": [(7, 0.9), (7, 0.85), (6, 0.9)]})
    ranking = rank(load(root))
    assert ranking.suppressed is None
    assert [(r.config, r.rank) for r in ranking.rows] == [("spectral-norm", 1), ("vanilla", 2), ("wgan-gp", None)]
    smeared = ranking.rows_of("wgan-gp")[0]
    assert smeared.unconverged == 2 and smeared.vs_baseline.why == "not compared: 2/3 runs not converged"
    line = next(v for v in verdicts(ranking) if v.startswith("wgan-gp"))
    assert "not converged in 2/3 runs" in line and "not compared" in line


def test_a_floor_changed_after_the_runs_needs_no_retraining(tmp_path):
    # The floor travels in provenance; a stricter one in a later run would split nothing.
    root = suite_of(tmp_path, {"vanilla": [(6, 0.6), (5, 0.7)], "b": [(7, 0.9), (7, 0.9)]})
    results = load(root)
    assert {tuple(c.ok for c in checks) for checks in results.convergence.values()} == {(True,)}
    assert pytest.approx(results.convergence[results.runs["run_id"].iloc[0]][0].value) == 0.6


def test_a_ceiling_guard_fires_on_blobs_above_it(tmp_path):
    # Stacked MNIST's case: a collapsed generator of blobs covers a few modes, at a digit FD near 1,000.
    root = suite_of(tmp_path, {"vanilla": [(4, 1064.4), (15, 1063.1)], "pacdcgan2": [(3, 989.4), (8, 950.0)]},
                    **STACKED)
    report = build_report(root)
    ranking = report.ranking
    assert ranking.suppressed and ranking.guard.ceiling and ranking.guard.key == "digit_fd"
    assert all(r.rank is None for r in ranking.rows)
    lines = verdicts(ranking)
    assert lines[0].startswith("NOT RANKED: the baseline vanilla is not converged: its final digit FD is above 180 "
                               "in 2 of 2 runs"), lines[0]
    assert "not converged in 2/2 runs" in lines[1] and "converged when at most 180)" in lines[1]
    assert "is at most 180, the bound the metric declares" in report.markdown.read_text()
    assert list(pd.read_csv(root / "results.csv")["converged"]) == [False] * 4


def test_a_ceiling_guard_stays_quiet_below_it_and_holds_back_a_run_above_it(tmp_path):
    root = suite_of(tmp_path, {"vanilla": [(120, 140.0), (95, 150.0), (110, 130.0)],
                               "pacdcgan2": [(700, 120.0), (650, 135.0), (720, 125.0)],
                               "smeared": [(900, 400.0), (880, 160.0), (910, 420.0)]}, **STACKED)
    ranking = rank(load(root))
    assert ranking.suppressed is None
    assert [(r.config, r.rank) for r in ranking.rows] == [("pacdcgan2", 1), ("vanilla", 2), ("smeared", None)]
    assert ranking.rows_of("smeared")[0].unconverged == 2
    line = next(v for v in verdicts(ranking) if v.startswith("vanilla"))
    assert "converged (digit FD" in line and "at most 180 in every run" in line


def test_a_convergence_has_exactly_one_bound():
    floor = ganbench.Convergence("high_quality_fraction", 0.5, ("modes_covered",))
    ceiling = ganbench.Convergence("digit_fd", None, ("modes_covered",), at_most=180.0)
    assert floor.holds(0.5) and not floor.holds(0.49)
    assert ceiling.holds(180.0) and not ceiling.holds(180.5)
    assert floor.record() == {"key": "high_quality_fraction", "at_least": 0.5, "guards": ["modes_covered"], "why": ""}
    assert ceiling.record() == {"key": "digit_fd", "at_most": 180.0, "guards": ["modes_covered"], "why": ""}
    with pytest.raises(ValueError, match="exactly one of at_least and at_most, not both"):
        ganbench.Convergence("digit_fd", 0.5, ("modes_covered",), at_most=180.0)
    with pytest.raises(ValueError, match="not neither"):
        ganbench.Convergence("digit_fd", None, ("modes_covered",))
