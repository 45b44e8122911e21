"""MLflow: one MLflow run per ganbench run, with its settings as params and its curves as metrics,
sent while it trains to a tracking server, a database, or a local mlruns/ folder.

A resumed run continues its MLflow run (its id is kept in the checkpoint) and skips the steps the
last process logged already, so no step appears twice.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import ganbench
from ganbench_plugins.loggers import flat_settings, missing, random_streams_kept, scalars

# MLflow's end states for ganbench's; a run stopped by a policy ran to an end the suite chose.
END = {"completed": "FINISHED", "collapsed": "FINISHED", "stopped": "FINISHED", "diverged": "FAILED",
       "failed": "FAILED", "interrupted": "KILLED"}
BATCH = 1000  # MLflow takes at most 1000 metrics and 100 params in one log_batch call


@dataclass(frozen=True)
class Params:
    tracking_uri: str = ""  # http://host:5000, sqlite:///mlflow.db or a folder; "" is $MLFLOW_TRACKING_URI, else mlruns/ in the suite's output folder
    experiment: str = ""  # the MLflow experiment; "" is the suite's name
    images: bool = True  # upload each eval point's sample grid as an artifact (samples/)


class MLflow:
    """Live curves in MLflow: one MLflow run per ganbench run, params, metrics and sample grids."""

    name = "mlflow"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params
        self.client: Any = None
        self.run_id: str | None = None  # the MLflow run's id, kept across a resume
        self.resumed = False
        self.logged: dict[str, int] = {}  # on resume: the last step MLflow already has, per metric key

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        return missing("mlflow", "mlflow")

    def tracking_uri(self, run: ganbench.Run) -> str:
        uri = self.p.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        if not uri:
            out = run.dir.parent.parent if run.dir.parent.name == "runs" else run.dir
            uri = (out / "mlruns").resolve().as_uri()
        if urlparse(uri).scheme in ("", "file"):
            # MLflow 3 refuses its folder store unless asked: it is in maintenance, not removed, and
            # it is the only local store that needs no database packages.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return uri

    def open(self, run: ganbench.Run) -> Any:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri(run))
        if self.run_id is not None:
            client.update_run(self.run_id, status="RUNNING")
        else:
            settings = flat_settings(run)
            name = self.p.experiment or str(settings["suite"]) or "ganbench"
            found = client.get_experiment_by_name(name)
            if found is None:
                try:
                    found = client.get_experiment(client.create_experiment(name))
                except MlflowException:  # another run of the suite created it first
                    found = client.get_experiment_by_name(name)
            tags = {"ganbench.run_id": run.id, "ganbench.config": run.settings.config, "ganbench.seed": str(run.seed)}
            self.run_id = client.create_run(found.experiment_id, run_name=run.id, tags=tags).info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in settings.items()]
            for i in range(0, len(params), 100):
                client.log_batch(self.run_id, params=params[i:i + 100])
        self.client = client
        return client

    def already_logged(self, key: str) -> int:
        """The last step of `key` in the MLflow run, read once per key after a resume."""
        if key not in self.logged:
            history = self.client.get_metric_history(self.run_id, key) if self.resumed else []
            self.logged[key] = max((m.step for m in history), default=-1)
        return self.logged[key]

    @ganbench.hookimpl
    def ganbench_log(self, run: ganbench.Run, record: dict[str, Any]) -> None:
        with random_streams_kept():
            self.log(run, record)

    def log(self, run: ganbench.Run, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        client = self.client or self.open(run)
        step, kind, stamp = record["step"], record["kind"], int(time.time() * 1000)
        metrics = [Metric(f"{kind}/{tag}", value, stamp, step) for tag, value in scalars(record).items()
                   if step > self.already_logged(f"{kind}/{tag}")]
        for i in range(0, len(metrics), BATCH):
            client.log_batch(self.run_id, metrics=metrics[i:i + BATCH])
        if kind == "eval" and self.p.images and record.get("sample_grid"):
            client.log_artifact(self.run_id, str(Path(run.dir) / record["sample_grid"]), "samples")

    @ganbench.hookimpl(tryfirst=True)  # ended before other plugins' clean-up, which may fail
    def ganbench_run_end(self, run: ganbench.Run, status: str, reason: str | None) -> None:
        if self.client is None:
            return
        with random_streams_kept():
            self.end(status, reason)

    def end(self, status: str, reason: str | None) -> None:
        self.client.set_tag(self.run_id, "ganbench.status", status)
        if reason:
            self.client.set_tag(self.run_id, "ganbench.reason", reason[:5000])
        self.client.set_terminated(self.run_id, status=END.get(status, "FINISHED"))
        self.client = None

    @ganbench.hookimpl
    def ganbench_state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    @ganbench.hookimpl
    def ganbench_load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state["run_id"]
        self.resumed = self.run_id is not None


@ganbench.hookimpl
def ganbench_register_loggers() -> list[type]:
    return [MLflow]
