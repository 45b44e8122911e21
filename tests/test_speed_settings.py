"""The speed settings (`precision`, `channels_last`, `compile`): validated in one line; outside the
run id at their defaults, so runs made before them keep their ids, and inside it otherwise; in every
metric's provenance, so a bf16 or compiled run is never ranked with an eager fp32 one; and each
trains finite steps, reads the device once per log interval and resumes bit-identical, on every
device present. torch.compile takes 40-50 s to compile a tiny run on a cold 2-core CPU (its cache
makes a rerun about 5 s), so the compiled tests are slow-marked."""
from __future__ import annotations

import csv
import json
import math
import signal
from pathlib import Path

import pytest
import torch

from ganbench import checkpoint
from ganbench.errors import UsageError
from ganbench.fid import comparable
from ganbench.interrupt import StopRequest
from ganbench.rundir import read_jsonl
from ganbench.settings import speed_changes
from ganbench.suite import load_suite
from ganbench.trainer import build_run, execute, train

ROOT = Path(__file__).parents[1]
# Each setting alone and the two cheap ones together; compile has its own (slow) tests below.
CASES = {
    "bf16": 'precision = "bf16"',
    "channels-last": "channels_last = true",
    "bf16-channels-last": 'precision = "bf16"\nchannels_last = true',
}
# bf16 keeps 8 bits of mantissa (relative rounding 2**-8 = 0.4% per operation); the losses are
# means over the batch, computed in fp32, so the first steps' losses move far less than that.
BF16_LOSS_TOLERANCE = 0.02


def spec_of(tiny_suite, extra: str = "", name: str = "suite.toml"):
    return load_suite(tiny_suite(extra, name)).runs("default")[0]


@pytest.mark.parametrize("line,message", [
    ('precision = "fp16"', r'configs\[0\]\.precision = "fp16".*"fp32" \| "bf16"'),
    ("channels_last = 1", r"configs\[0\]\.channels_last = 1:.*bool"),
    ('compile = "reduce_overhead"', r'configs\[0\]\.compile = "reduce_overhead":.*"reduce-overhead"'),
])
def test_a_bad_speed_setting_is_one_line_naming_the_key_and_what_is_allowed(tiny_suite, line, message):
    with pytest.raises(UsageError, match=message) as caught:
        spec_of(tiny_suite, line)
    assert "\n" not in str(caught.value) and "suite.toml" in str(caught.value)


def test_speed_settings_at_their_defaults_leave_the_run_id_alone(tiny_suite):
    plain = spec_of(tiny_suite)
    spelled_out = spec_of(tiny_suite, 'precision = "fp32"\nchannels_last = false\ncompile = false', "b.toml")
    assert spelled_out.run_id == plain.run_id
    changed = [spec_of(tiny_suite, line, f"{i}.toml").run_id
               for i, line in enumerate([*CASES.values(), "compile = true", 'compile = "reduce-overhead"'])]
    assert plain.run_id not in changed and len(set(changed)) == len(changed), changed
    # true is torch.compile's "default" mode: one run, whichever way it is written
    assert spec_of(tiny_suite, "compile = true", "t.toml").run_id == spec_of(tiny_suite, 'compile = "default"',
                                                                             "d.toml").run_id


def test_the_committed_stability_answer_keeps_its_run_ids():
    """The 24 completed runs behind reports/answer-stability-cpu/ were trained before the speed
    settings existed: the suite must still plan them under the same ids, or a rerun trains them again."""
    committed = {row["run_id"] for row in csv.DictReader((ROOT / "reports/answer-stability-cpu/results.csv").open())}
    planned = {spec.run_id for spec in load_suite(ROOT / "suites/stability.toml").runs("cpu")}
    assert committed and committed <= planned, sorted(committed - planned)


def test_config_json_without_speed_keys_rebuilds_the_same_run(tiny_suite):
    """A config.json written before the settings existed lacks their keys: they read as defaults."""
    from ganbench.suite import spec_from_resolved

    spec = spec_of(tiny_suite)
    resolved = json.loads(json.dumps(spec.resolved()))
    for key in ("precision", "channels_last", "compile"):
        del resolved["settings"][key]
    assert spec_from_resolved(resolved, spec.settings.registry).run_id == spec.run_id


MIXTURE = """
[suite]
name = "prov"
question = "Is the training precision in the provenance?"
[dataset]
name = "ring8"
[defaults]
architecture = { name = "mlp", width = 16 }
batch_size = 16
steps = 2
log_every = 2
eval_every = 2
grid_size = 4
metrics = ["mixture-modes"]
[[configs]]
name = "a"
"""


@pytest.mark.parametrize("line", ['precision = "bf16"', "channels_last = true", 'compile = "max-autotune"'])
def test_a_speed_setting_is_in_every_metrics_provenance_and_splits_the_ranking(write_suite, tmp_path, one_thread,
                                                                               line):
    from ganbench.trainer import evaluate

    provenances = []
    for name, extra in (("plain", ""), ("speed", line)):
        spec = load_suite(write_suite(MIXTURE + extra, f"{name}.toml")).runs("default")[0]
        run = build_run(spec, tmp_path / name, torch.device("cpu"))  # compiles nothing: the step does
        z = run.hook.ganbench_sample_latent(run=run, n=4)
        provenances.append(evaluate(run, 2, 32, z, None)["provenance"]["mixture-modes"])
    plain, speed = provenances
    changes = speed_changes(spec.settings.core)
    assert len(changes) == 1
    assert not any(k.startswith("train_") for k in plain)  # runs at the defaults record what they always did
    assert {k: speed[k] for k in speed if k.startswith("train_")} == {f"train_{k}": v for k, v in changes.items()}
    assert comparable(plain, speed) == sorted(f"train_{k}" for k in changes)  # never ranked together


def train_records(run_dir: Path) -> list[dict]:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(CASES))
def test_each_speed_setting_trains_finite_steps_close_to_fp32(tiny_suite, tmp_path, one_thread, device, case):
    plain = spec_of(tiny_suite, "steps = 3")
    fast = spec_of(tiny_suite, f"steps = 3\n{CASES[case]}", "fast.toml")
    for name, spec in (("plain", plain), ("fast", fast)):
        assert execute(spec, tmp_path / name, device) == "completed", (tmp_path / name / "error.txt").read_text()
    run = build_run(fast, tmp_path / "look", device)
    if fast.settings.channels_last:
        conv = [p for p in run.models.discriminator.parameters() if p.dim() == 4]
        assert conv and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv)
    for a, b in zip(train_records(tmp_path / "plain"), train_records(tmp_path / "fast")):
        for key in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert math.isfinite(b[key]), (key, b)
            assert abs(a[key] - b[key]) <= BF16_LOSS_TOLERANCE * max(1.0, abs(a[key])), (key, a[key], b[key])


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(CASES))
def test_each_speed_setting_reads_the_device_once_per_log_interval(tiny_suite, tmp_path, monkeypatch, device, case):
    from test_trainer import SyncCounter

    counts = []
    for steps in (4, 12):
        spec = spec_of(tiny_suite, f"{CASES[case]}\nsteps = {steps}\nlog_every = {steps}\neval_every = {steps}",
                       f"{steps}.toml")
        run = build_run(spec, tmp_path / str(steps), device)
        with monkeypatch.context() as m:
            counter = SyncCounter(m)
            assert train(run)[0] == "completed"
        counts.append(counter.count)
    assert counts[0] == counts[1], counts


def resumes_identically(spec, tmp_path: Path, device: torch.device, stop_at: int) -> None:
    """An uninterrupted run and one stopped after `stop_at` steps and resumed end bit-identical."""
    reference = build_run(spec, tmp_path / "ref", device)
    assert train(reference) == ("completed", None)
    stop = StopRequest()

    def progress(record):
        if record["step"] == stop_at:
            stop.request(signal.SIGTERM)

    assert execute(spec, tmp_path / "run", device, progress=progress, stop=stop) == "interrupted"
    assert execute(spec, tmp_path / "run", device) == "completed", (tmp_path / "run" / "error.txt").read_text()
    resumed = torch.load(tmp_path / "run" / checkpoint.FILE, weights_only=True)["models"]
    for net, module in (("generator", reference.models.generator), ("discriminator", reference.models.discriminator)):
        for name, tensor in module.state_dict().items():
            assert torch.equal(tensor, resumed[net][name].to(tensor.device)), (net, name)


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(CASES))
def test_a_speed_run_resumes_bit_identical(tiny_suite, tmp_path, one_thread, device, deterministic, case):
    resumes_identically(spec_of(tiny_suite, f"{CASES[case]}\nsteps = 6"), tmp_path, device, stop_at=2)


@pytest.mark.slow
@pytest.mark.gpu
def test_a_compiled_step_trains_like_eager_resumes_identically_and_reads_once_per_interval(
        tiny_suite, tmp_path, monkeypatch, one_thread, device, deterministic):
    """One test for every compiled check: each compilation of a tiny run costs seconds to a minute."""
    from test_trainer import SyncCounter

    eager = spec_of(tiny_suite, "steps = 6")
    compiled = spec_of(tiny_suite, "steps = 6\ncompile = true", "compiled.toml")
    assert execute(eager, tmp_path / "eager", device) == "completed"
    resumes_identically(compiled, tmp_path, device, stop_at=2)
    # Fused kernels round differently from eager ones (float32), far below bf16's tolerance.
    for a, b in zip(train_records(tmp_path / "eager"), train_records(tmp_path / "run")):
        for key in ("d_loss", "g_loss"):
            assert math.isfinite(b[key]) and abs(a[key] - b[key]) <= 1e-3 * max(1.0, abs(a[key])), (key, a, b)
    counts = []
    for steps in (4, 12):  # CUDA graphs on a GPU: no host read inside the captured step either
        spec = spec_of(tiny_suite, f'compile = "reduce-overhead"\nsteps = {steps}\nlog_every = {steps}\n'
                                   f"eval_every = {steps}", f"ro{steps}.toml")
        run = build_run(spec, tmp_path / f"ro{steps}", device)
        with monkeypatch.context() as m:
            counter = SyncCounter(m)
            assert train(run)[0] == "completed"
        counts.append(counter.count)
    assert counts[0] == counts[1], counts
