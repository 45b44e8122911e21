"""Loggers: a tiny real run with `loggers = [...]` leaves TensorBoard event files and an MLflow run
that hold exactly what metrics.jsonl holds (read back with TensorBoard's EventAccumulator and
mlflow.get_run), a resumed run adds no step twice, and a bad or uninstalled logger is one line."""
from __future__ import annotations

import math
import sys

import pytest
import torch

from ganbench.errors import UsageError
from ganbench.rundir import read_jsonl
from ganbench.suite import load_suite
from ganbench.trainer import execute

CPU = torch.device("cpu")
pytest.importorskip("tensorboard")


def events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def train_records(run_dir):
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_tensorboard_holds_the_records_grids_and_settings(tiny_suite, tmp_path, one_thread):
    spec = load_suite(tiny_suite('loggers = ["tensorboard"]\nsteps = 4\nlog_every = 2')).runs("default")[0]
    run_dir = tmp_path / "runs" / spec.run_id
    assert execute(spec, run_dir, CPU) == "completed"
    acc = events(run_dir)
    records = train_records(run_dir)
    assert [r["step"] for r in records] == [2, 4]
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "grad_norm_d"):
        points = acc.Scalars(f"train/{key}")
        assert [p.step for p in points] == [2, 4], key
        for point, record in zip(points, records):  # float32 in the event file
            assert math.isclose(point.value, record[key], rel_tol=1e-6, abs_tol=1e-7), key
    assert [e.step for e in acc.Images("samples")] == [2, 4]  # eval_every = 2
    hparams = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams
    content = hparams["_hparams_/session_start_info"]
    assert b"optimizer.d.lr" in content and b"steps" in content


def test_mlflow_holds_the_params_and_metrics(tiny_suite, tmp_path, one_thread, monkeypatch):
    pytest.importorskip("mlflow")
    import mlflow

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # where mlflow.get_run looks
    extra = f'loggers = [{{ name = "mlflow", tracking_uri = "{uri}" }}]\nsteps = 4\nlog_every = 2'
    spec = load_suite(tiny_suite(extra)).runs("default")[0]
    run_dir = tmp_path / "runs" / spec.run_id
    assert execute(spec, run_dir, CPU) == "completed"
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    [found] = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    got = mlflow.get_run(found.info.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == spec.run_id
    assert got.data.params["steps"] == "4" and got.data.params["loss"] == "bce"
    assert got.data.tags["ganbench.status"] == "completed"
    history = client.get_metric_history(found.info.run_id, "train/d_loss")
    records = train_records(run_dir)
    assert [(m.step, m.value) for m in history] == [(r["step"], r["d_loss"]) for r in records]
    assert [a.path for a in client.list_artifacts(found.info.run_id, "samples")] == [
        "samples/step-0000002.png", "samples/step-0000004.png"]


def test_a_resumed_run_logs_no_step_twice(tiny_suite, tmp_path, one_thread, monkeypatch):
    """A crash at step 6 after a checkpoint at step 4: the resumed run trains 5 and 6 again. TensorBoard
    drops the first attempt's 5 and 6 (purge_step), MLflow is not sent them again."""
    pytest.importorskip("mlflow")
    import mlflow

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the mlflow logger's default, and mlflow.get_run's
    extra = ('loggers = ["tensorboard", "mlflow"]\n'
             "steps = 8\nlog_every = 1\neval_every = 3\ncheckpoint_every = 4")
    spec = load_suite(tiny_suite(extra)).runs("default")[0]
    run_dir = tmp_path / "runs" / spec.run_id

    def crash(record):
        if record["step"] == 6:
            raise RuntimeError("lost the node")

    assert execute(spec, run_dir, CPU, progress=crash) == "failed"
    assert execute(spec, run_dir, CPU) == "completed"
    steps = list(range(1, 9))
    assert [r["step"] for r in train_records(run_dir)] == steps
    acc = events(run_dir)
    assert [p.step for p in acc.Scalars("train/d_loss")] == steps
    assert [e.step for e in acc.Images("samples")] == [3, 6, 8]
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    [found] = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert [m.step for m in client.get_metric_history(found.info.run_id, "train/d_loss")] == steps
    assert [m.step for m in client.get_metric_history(found.info.run_id, "eval/images_seen")] == [3, 6, 8]
    assert mlflow.get_run(found.info.run_id).info.status == "FINISHED"


def test_loggers_are_not_part_of_the_run_id(tiny_suite):
    plain = load_suite(tiny_suite()).runs("default")[0]
    logged = load_suite(tiny_suite('loggers = ["tensorboard"]', name="logged.toml")).runs("default")[0]
    cli = load_suite(tiny_suite(), loggers=["tensorboard"]).runs("default")[0]
    assert plain.run_id == logged.run_id == cli.run_id
    assert [c.name for c in cli.settings.loggers] == ["tensorboard"]
    assert cli.resolved()["settings"]["loggers"] == [{"name": "tensorboard", "params": {"flush_secs": 10, "images": True}}]


def test_an_unknown_logger_is_one_line_with_did_you_mean(tiny_suite):
    with pytest.raises(UsageError) as info:
        load_suite(tiny_suite('loggers = ["tensorbord"]'))
    message = str(info.value)
    assert "\n" not in message and "configs[0].loggers[0]" in message
    assert 'unknown logger (did you mean "tensorboard"?); available: mlflow, tensorboard' in message
    with pytest.raises(UsageError, match=r'--logger = "mlfow": unknown logger \(did you mean "mlflow"\?\)'):
        load_suite(tiny_suite(), loggers=["mlfow"])


@pytest.mark.parametrize("name, module", [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_a_logger_without_its_extra_is_refused_in_one_line(tiny_suite, monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import <module>` now raises ImportError
    with pytest.raises(UsageError) as info:
        load_suite(tiny_suite(f'loggers = ["{name}"]'))
    message = str(info.value)
    assert "\n" not in message
    assert f'logger "{name}" cannot be used here' in message
    assert f"pip install 'ganbench[{name}]'" in message
