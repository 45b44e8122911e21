"""TensorBoard: each run's curves, sample grids and settings in its folder's tb/, while it trains.

`tensorboard --logdir reports/<suite>` then shows every run of the suite, named by its run id
(config, seed, settings hash). Scalars are the metrics.jsonl records as written ("train/d_loss",
"eval/fid"), so a logger costs no device read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import ganbench
from ganbench_plugins.loggers import flat_settings, missing, scalars


@dataclass(frozen=True)
class Params:
    flush_secs: ganbench.PositiveInt = 10  # seconds between writes to disk: how far the live curves may lag
    images: bool = True  # add each eval point's sample grid as an image


class TensorBoard:
    """Live curves in TensorBoard: scalars, sample grids and hparams in each run's tb/ folder."""

    name = "tensorboard"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params
        self.writer: Any = None
        self.resumed_at: int | None = None  # the checkpoint's step, when the run resumed from one

    @classmethod
    def check(cls, params: Params, setup: Any) -> str | None:
        return missing("tensorboard", "tensorboard")

    def open(self, run: ganbench.Run) -> Any:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        folder = run.dir / "tb"
        if self.resumed_at is None:  # from step 0: an earlier attempt's events would draw over these
            for old in folder.glob("events.out.tfevents.*"):
                old.unlink()
        # On resume, TensorBoard drops what the last process logged after its checkpoint (steps it
        # trains again) when it reads the files: a START event at purge_step.
        purge = None if self.resumed_at is None else self.resumed_at + 1
        self.writer = SummaryWriter(str(folder), purge_step=purge, flush_secs=self.p.flush_secs)
        if self.resumed_at is None:
            # The session's hparams only (no experiment summary): TensorBoard's HParams tab then
            # builds one table from every run of the suite, whatever settings each has.
            _, session_start, _ = hparams(flat_settings(run), {})
            self.writer.file_writer.add_summary(session_start)
        return self.writer

    @ganbench.hookimpl
    def ganbench_log(self, run: ganbench.Run, record: dict[str, Any]) -> None:
        writer = self.writer or self.open(run)
        step, kind = record["step"], record["kind"]
        for tag, value in scalars(record).items():
            writer.add_scalar(f"{kind}/{tag}", value, step)
        if kind == "eval" and self.p.images and record.get("sample_grid"):
            from PIL import Image

            with Image.open(run.dir / record["sample_grid"]) as grid:
                writer.add_image("samples", np.asarray(grid.convert("RGB")), step, dataformats="HWC")

    @ganbench.hookimpl(tryfirst=True)  # closed before other plugins' clean-up, which may fail
    def ganbench_run_end(self, run: ganbench.Run, status: str, reason: str | None) -> None:
        if self.writer is None:
            return
        self.writer.add_text("status", f"{status}" + (f": {reason}" if reason else ""), run.done)
        self.writer.close()
        self.writer = None

    @ganbench.hookimpl
    def ganbench_state_dict(self, run: ganbench.Run) -> dict[str, Any]:
        if self.writer is not None:
            self.writer.flush()  # what the checkpoint covers is on disk with it
        return {"step": run.done}

    @ganbench.hookimpl
    def ganbench_load_state_dict(self, state: dict[str, Any]) -> None:
        self.resumed_at = int(state["step"])


@ganbench.hookimpl
def ganbench_register_loggers() -> list[type]:
    return [TensorBoard]
