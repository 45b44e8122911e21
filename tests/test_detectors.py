"""Detectors on hand-made record streams, incident policies end to end, and the diagnostics'
measurements against independent references."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ganbench.diagnostics import SpectralNorms, batch_diversity
from ganbench.errors import UsageError
from ganbench.suite import load_suite
from ganbench.trainer import build_run, execute, train
from ganbench_plugins.detectors.d_dominance import DDominance
from ganbench_plugins.detectors.d_dominance import Params as DParams
from ganbench_plugins.detectors.divergence import Divergence
from ganbench_plugins.detectors.divergence import Params as DivParams
from ganbench_plugins.detectors.fid_regression import FidRegression
from ganbench_plugins.detectors.fid_regression import Params as FidParams
from ganbench_plugins.detectors.gradients import Gradients
from ganbench_plugins.detectors.gradients import Params as GradParams
from ganbench_plugins.detectors.mode_collapse import ModeCollapse
from ganbench_plugins.detectors.mode_collapse import Params as MCParams

CPU = torch.device("cpu")
FAULTS = Path(__file__).parents[1] / "benchmarks" / "detector_quality" / "faults.py"


def run_double(scores: str = "logit", steps: int = 1000) -> SimpleNamespace:
    """Test double: the two things detectors read from a run."""
    return SimpleNamespace(settings=SimpleNamespace(steps=steps, loss=SimpleNamespace(cls=SimpleNamespace(scores=scores))))


def train_record(step: int, **values: float) -> dict:
    return {"kind": "train", "step": step, **values}


def feed(detector, records, run=None):
    """Every incident a detector returns over a stream of records."""
    found = []
    for record in records:
        kwargs = {"record": record}
        if "run" in detector.ganbench_detect.__code__.co_varnames:
            kwargs["run"] = run or run_double()
        for incident in detector.ganbench_detect(**kwargs) or []:
            if incident.step is None:  # as the core does: the record's step
                incident.step = record["step"]
            found.append(incident)
    return found


# ---- divergence ------------------------------------------------------------------------------

def test_nonfinite_values_are_one_critical_divergence_at_their_first_step():
    record = train_record(50, d_loss=None, g_loss=1.0, nonfinite={
        "losses": {"step": 43, "keys": ["d_loss"]}, "gradients_d": {"step": 42, "keys": ["discriminator gradients"]}})
    (incident,) = feed(Divergence(DivParams()), [record])
    assert (incident.kind, incident.severity, incident.step) == ("divergence", "critical", 42)
    assert "d_loss at step 43" in incident.message and incident.evidence["nonfinite"] == record["nonfinite"]


def test_a_loss_blowup_against_its_early_size_is_divergence_once():
    calm = [train_record(10 * i, d_loss=1.0 + 0.01 * i, g_loss=0.7) for i in range(1, 8)]
    blown = [train_record(80, d_loss=500.0, g_loss=0.7), train_record(90, d_loss=900.0, g_loss=0.7)]
    found = feed(Divergence(DivParams()), calm + blown)
    assert [(i.kind, i.step) for i in found] == [("divergence", 80)]
    assert found[0].evidence["d_loss"] == 500.0 and found[0].evidence["limit"] == pytest.approx(100 * 1.04)
    assert feed(Divergence(DivParams()), calm) == []


# ---- gradients -------------------------------------------------------------------------------

def test_vanishing_gradients_need_the_whole_window_and_are_reported_once():
    early = [train_record(10 * i, grad_norm_g=2.0, grad_norm_d=1.0) for i in range(1, 7)]
    dip = [train_record(70, grad_norm_g=0.001, grad_norm_d=1.0), train_record(80, grad_norm_g=2.0, grad_norm_d=1.0)]
    gone = [train_record(s, grad_norm_g=0.001, grad_norm_d=1.0) for s in (90, 100, 110, 120)]
    found = feed(Gradients(GradParams()), early + dip + gone)
    assert [(i.kind, i.step, i.evidence["network"]) for i in found] == [("vanishing-gradients", 90, "generator")]
    assert found[0].evidence["baseline"] == 2.0


def test_exploding_discriminator_gradients():
    records = [train_record(10 * i, grad_norm_g=1.0, grad_norm_d=1.0) for i in range(1, 7)]
    records += [train_record(s, grad_norm_g=1.0, grad_norm_d=500.0) for s in (70, 80, 90)]
    (incident,) = feed(Gradients(GradParams()), records)
    assert (incident.kind, incident.evidence["network"], incident.step) == ("exploding-gradients", "discriminator", 70)


# ---- d-dominance ------------------------------------------------------------------------------

def dominance_stream(d_loss: float, d_acc: float, g_norms: list[float]) -> list[dict]:
    return [train_record(10 * (i + 1), d_loss=d_loss, d_acc=d_acc, d_real=5.0, d_fake=-5.0, d_gap=10.0,
                         g_loss=6.0, grad_norm_g=g, grad_norm_d=0.01) for i, g in enumerate(g_norms)]


def test_a_saturated_logit_d_is_dominance_and_a_healthy_early_dcgan_is_not():
    dominated = dominance_stream(0.001, 1.0, [40.0] * 8)
    (incident,) = feed(DDominance(DParams()), dominated)
    assert (incident.kind, incident.severity, incident.step) == ("d-dominance", "warning", 10)
    # A healthy DCGAN on MNIST early on: perfect accuracy, D loss around 0.03.
    assert feed(DDominance(DParams()), dominance_stream(0.03, 1.0, [15.0] * 20)) == []


def test_dominance_with_a_collapsed_g_gradient_is_critical():
    stream = dominance_stream(0.001, 1.0, [10.0] * 6 + [0.1] * 5)
    found = feed(DDominance(DParams(window=5)), stream[:1] + stream[6:] + stream[1:1])
    found = feed(DDominance(DParams()), dominance_stream(0.5, 0.6, [10.0] * 6) + dominance_stream(0.001, 1.0, [0.1] * 5))
    assert [i.severity for i in found] == ["critical"] and found[0].evidence["g_collapsed"] is True


def test_dominance_is_loss_aware():
    zero_hinge = dominance_stream(0.0, 1.0, [10.0] * 10)  # every sample past its margin, G still learning
    assert feed(DDominance(DParams()), zero_hinge, run_double("margin")) == []
    collapsed_hinge = dominance_stream(0.0, 1.0, [10.0] * 6) + dominance_stream(0.0, 1.0, [0.01] * 5)
    assert [i.severity for i in feed(DDominance(DParams()), collapsed_hinge, run_double("margin"))] == ["critical"]
    assert feed(DDominance(DParams()), dominance_stream(-50.0, 1.0, [0.01] * 10), run_double("critic")) == []
    assert feed(DDominance(DParams()), dominance_stream(0.001, 1.0, [0.01] * 10), run_double("other")) == []


def test_relativistic_dominance_reads_the_loss_and_the_gap_not_raw_accuracy():
    # RaGAN's scores may all sit above 0 (accuracy 0.5) while D separates real from fake perfectly.
    saturated = [{**r, "d_real": 9.0, "d_fake": 1.0, "d_gap": 8.0} for r in dominance_stream(0.001, 0.5, [40.0] * 8)]
    (incident,) = feed(DDominance(DParams()), saturated, run_double("relativistic"))
    assert (incident.kind, incident.step, incident.evidence["loss_scores"]) == ("d-dominance", 10, "relativistic")
    healthy = [{**r, "d_gap": 0.5} for r in dominance_stream(0.4, 0.5, [40.0] * 8)]
    assert feed(DDominance(DParams()), healthy, run_double("relativistic")) == []


# ---- mode collapse ----------------------------------------------------------------------------

def diversity_stream(values: list[tuple[float, float]]) -> list[dict]:
    return [train_record(10 * (i + 1), batch_diversity=d, duplicate_rate=u) for i, (d, u) in enumerate(values)]


def test_an_untrained_generator_gaining_diversity_is_not_collapse():
    rising = diversity_stream([(0.08, 1.0)] * 10 + [(0.2, 0.9), (0.4, 0.3), (0.7, 0.0), (0.8, 0.0)])
    assert feed(ModeCollapse(MCParams()), rising) == []


def test_diversity_falling_from_its_best_is_collapse():
    stream = diversity_stream([(0.8, 0.0)] * 4 + [(0.15, 0.6)] * 4)
    (incident,) = feed(ModeCollapse(MCParams()), stream)
    assert (incident.severity, incident.step, incident.evidence["best_diversity"]) == ("warning", 50, 0.8)


def test_a_constant_generator_is_total_collapse_from_the_start():
    (incident,) = feed(ModeCollapse(MCParams()), diversity_stream([(0.0, 1.0)] * 6))
    assert (incident.severity, incident.step) == ("critical", 10)
    assert incident.message.startswith("total collapse")


def eval_record(step: int, covered: float, key: str = "classes_covered", total_key: str = "classes_total", total=10):
    return {"kind": "eval", "step": step, key: covered, "provenance": {"m": {total_key: total}}}


def test_coverage_dropping_from_its_best_or_ending_low_is_collapse():
    run = run_double(steps=300)
    dropped = feed(ModeCollapse(MCParams()), [eval_record(100, 9), eval_record(200, 5), eval_record(300, 9)], run)
    assert [(i.step, i.evidence["best"]) for i in dropped] == [(200, 9)]
    # Low coverage mid-run is an untrained G; at the end of the run it is collapse.
    rising = feed(ModeCollapse(MCParams()), [eval_record(100, 2), eval_record(200, 3), eval_record(300, 10)], run)
    assert rising == []
    ring = [eval_record(s, 5, "modes_covered", "modes_total", 8) for s in (100, 200, 300)]
    (incident,) = feed(ModeCollapse(MCParams()), ring, run)
    assert incident.step == 300 and "5 of 8" in incident.message



def guarded_record(step: int, covered: float, sharpness: float) -> dict:
    """An eval record of mixture-modes as the trainer writes it: modes covered, guarded by the
    high-quality fraction's floor of 0.5."""
    convergence = {"key": "high_quality_fraction", "at_least": 0.5, "guards": ["modes_covered"], "why": "a smear"}
    return {"kind": "eval", "step": step, "modes_covered": covered, "high_quality_fraction": sharpness,
            "provenance": {"mixture-modes": {"modes_total": 25, "convergence": convergence}}}


def test_an_unconverged_count_is_no_fall_and_its_warning_says_so():
    run = run_double(steps=300)
    # A smear (PacGAN3 on the grid: 2.6% high quality) that wanders from 16 modes to 8 and 12: no
    # fall from its best, and the end-of-run warning says the samples are not converged.
    smear = [guarded_record(100, 16, 0.02), guarded_record(200, 8, 0.019), guarded_record(300, 12, 0.026)]
    (incident,) = feed(ModeCollapse(MCParams()), smear, run)
    assert (incident.kind, incident.severity, incident.step) == ("mode-collapse", "warning", 300)
    assert incident.evidence["high_quality_fraction"] == 0.026 and incident.evidence["converged_at_least"] == 0.5
    assert "12 of 25, under 75%" in incident.message and "not converged" in incident.message
    assert "under the floor 0.5" in incident.message
    # The same counts from sharp samples fall at step 200, and the warning has no caveat.
    sharp = [guarded_record(100, 16, 0.9), guarded_record(200, 8, 0.9), guarded_record(300, 12, 0.9)]
    (incident,) = feed(ModeCollapse(MCParams()), sharp, run)
    assert (incident.step, incident.evidence["best"]) == (200, 16) and "not converged" not in incident.message
    # A smear's count is not the best to fall from: 25 "covered" while smeared, then 17 when sharp.
    sharpening = [guarded_record(100, 25, 0.1), guarded_record(200, 17, 0.8), guarded_record(300, 19, 0.9)]
    assert feed(ModeCollapse(MCParams()), sharpening, run) == []
    # A ceiling (digit FD on Stacked MNIST) works the same way.
    record = guarded_record(300, 536, 0.0)
    record["provenance"]["mixture-modes"] = {"modes_total": 1000, "convergence": {
        "key": "digit_fd", "at_most": 180.0, "guards": ["modes_covered"], "why": "blurred digits"}}
    (incident,) = feed(ModeCollapse(MCParams()), [{**record, "digit_fd": 240.0}], run)
    assert "over the ceiling 180" in incident.message and incident.evidence["converged_at_most"] == 180.0
    (incident,) = feed(ModeCollapse(MCParams()), [{**record, "digit_fd": 150.0}], run)
    assert "not converged" not in incident.message

# ---- fid regression ---------------------------------------------------------------------------

def test_fid_regression_fires_once_per_episode():
    fids = [(100, 80.0), (200, 50.0), (300, 70.0), (400, 75.0), (500, 55.0), (600, 66.0)]
    found = feed(FidRegression(FidParams()), [{"kind": "eval", "step": s, "fid": f} for s, f in fids])
    assert [(i.step, i.evidence["best"]) for i in found] == [(300, 50.0), (600, 50.0)]


# ---- policies, end to end ----------------------------------------------------------------------

def fault_suite(tiny_suite, extra: str):
    path = tiny_suite(extra)
    text = path.read_text().replace('seeds = [0]', f'seeds = [0]\nplugins = ["{FAULTS}"]')
    path.write_text(text)
    return load_suite(path)


def test_a_stop_policy_ends_a_collapsed_run_with_its_reason(tiny_suite, tmp_path):
    suite = fault_suite(tiny_suite, 'tricks = ["frozen-generator"]\nsteps = 12\nlog_every = 1\n'
                                    'policy = { mode-collapse = "stop" }')
    assert execute(suite.runs("default")[0], tmp_path / "run", CPU) == "collapsed"
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["reason"].startswith("mode-collapse at step 1 (policy stop): total collapse")
    assert status["incidents"]["by_kind"] == {"mode-collapse": 1} and status["incidents"]["worst"] == "critical"
    (incident,) = [json.loads(x) for x in (tmp_path / "run" / "incidents.jsonl").read_text().splitlines()]
    assert incident["policy"] == "stop" and incident["detector"] == "mode-collapse"
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 3  # stopped at the record that completed the window, not at step 12


def test_the_same_fault_under_record_policy_completes(tiny_suite, tmp_path):
    suite = fault_suite(tiny_suite, 'tricks = ["frozen-generator"]\nsteps = 6\nlog_every = 1')
    assert execute(suite.runs("default")[0], tmp_path / "run", CPU) == "completed"
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["incidents"]["by_kind"]["mode-collapse"] == 1


def test_a_nan_is_a_divergence_incident_and_ends_the_run(tiny_suite, tmp_path):
    suite = fault_suite(tiny_suite, 'tricks = [{ name = "inject-nan", step = 3 }]\nsteps = 8\nlog_every = 2\n'
                                    'policy = { divergence = "record" }')
    assert execute(suite.runs("default")[0], tmp_path / "run", CPU) == "diverged"  # whatever the policy
    (incident,) = [json.loads(x) for x in (tmp_path / "run" / "incidents.jsonl").read_text().splitlines()]
    assert (incident["kind"], incident["step"], incident["severity"]) == ("divergence", 3, "critical")


@pytest.mark.parametrize("policy, message", [
    ('{ mode-colapse = "stop" }', 'unknown incident kind "mode-colapse" (did you mean "mode-collapse"?)'),
    ('{ mode-collapse = "halt" }', 'policy.mode-collapse = "halt": expected one of: record, stop'),
])
def test_bad_policies_are_one_line_errors(tiny_suite, policy, message):
    with pytest.raises(UsageError) as error:
        load_suite(tiny_suite(f"policy = {policy}"))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_policy_for_a_detector_not_chosen_is_refused(tiny_suite):
    with pytest.raises(UsageError, match='unknown incident kind "mode-collapse".*raise: divergence'):
        load_suite(tiny_suite('detectors = ["divergence"]\npolicy = { mode-collapse = "stop" }'))


UNDECLARED = '''
import ganbench

class Liar:
    """Test double: raises an incident kind it does not declare."""
    name = "liar-double"
    params = None
    kinds = {"declared": "stopped"}

    @ganbench.hookimpl
    def ganbench_detect(self, record):
        return [ganbench.Incident("undeclared", "warning", "x", {})]

@ganbench.hookimpl
def ganbench_register_detectors():
    return [Liar]
'''


def test_an_incident_of_an_undeclared_kind_fails_the_run(tiny_suite, tmp_path):
    plugin = tmp_path / "liar.py"
    plugin.write_text(UNDECLARED)
    path = tiny_suite('detectors = ["liar-double"]')
    path.write_text(path.read_text().replace('seeds = [0]', f'seeds = [0]\nplugins = ["{plugin}"]'))
    assert execute(load_suite(path).runs("default")[0], tmp_path / "run", CPU) == "failed"
    assert "no chosen detector declares" in json.loads((tmp_path / "run" / "status.json").read_text())["reason"]


# ---- diagnostics against independent references ------------------------------------------------

def test_spectral_norms_match_the_largest_singular_value():
    torch.manual_seed(0)
    d = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 1))
    names, sigmas = SpectralNorms(d).estimate(d)
    expected = [torch.linalg.matrix_norm(m.weight.detach().reshape(m.weight.shape[0], -1), ord=2)
                for m in (d[0], d[3])]
    assert names == ["0", "3"]
    assert sigmas.tolist() == pytest.approx([float(e) for e in expected], rel=1e-3)


def test_batch_diversity_of_identical_and_of_real_batches():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(64, 1, 28, 28, generator=g)
    other = torch.randn(64, 1, 28, 28, generator=g)
    # Exact on any CPU: the distances are direct differences, and x - x is 0 in floating point.
    # (cdist's |x|² + |y|² - 2x·y shortcut left some of these rows at up to 4e-4, on AMD and Intel.)
    for row in range(8):
        same = real[row:row + 1].expand(64, 1, 28, 28)
        ratio, duplicates = batch_diversity(real, same).tolist()
        assert (ratio, duplicates) == (0.0, 1.0), row
    ratio, duplicates = batch_diversity(real, other).tolist()
    assert ratio == pytest.approx(1.0, abs=0.02) and duplicates < 0.2


def test_train_records_carry_the_diagnostics_and_they_match_the_weights(tiny_suite, tmp_path):
    spec = load_suite(tiny_suite("steps = 3\nlog_every = 3")).runs("default")[0]
    run = build_run(spec, tmp_path / "run", CPU)
    assert train(run)[0] == "completed"
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (record,) = [r for r in records if r["kind"] == "train"]
    for key in ("grad_norm_g", "grad_norm_d", "grad_norm_g_max", "grad_norm_d_max", "grad_ratio", "weight_norm_g",
                "weight_norm_d", "sn_max_d", "batch_diversity", "duplicate_rate", "d_acc", "d_gap", "lr_g", "lr_d"):
        assert isinstance(record[key], float) and math.isfinite(record[key]), key
    weights = torch.cat([p.detach().flatten() for p in run.models.discriminator.parameters()])
    assert record["weight_norm_d"] == pytest.approx(float(weights.norm()), rel=1e-5)
    layer_weights = math.sqrt(sum(v["weight"] ** 2 for v in record["layers"]["d"].values()))
    assert layer_weights == pytest.approx(record["weight_norm_d"], rel=1e-5)
    assert record["grad_norm_g_max"] >= record["grad_norm_g"] > 0
    assert record["grad_ratio"] == pytest.approx(record["grad_norm_g"] / record["grad_norm_d"])


def test_diagnostics_off_leaves_only_the_loop_statistics(tiny_suite, tmp_path):
    spec = load_suite(tiny_suite("steps = 2\ndiagnostics = false")).runs("default")[0]
    assert execute(spec, tmp_path / "run", CPU) == "completed"
    record = next(r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
                  if r["kind"] == "train")
    assert "d_acc" in record and "grad_norm_g" not in record and "layers" not in record
