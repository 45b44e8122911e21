"""The training loop. It reads top to bottom; every variation between runs comes from hooks.

Per step: `d_updates` D updates on separate real and fake batches (or one combined batch), then
`g_updates` G updates. G's first update scores the fake batch of the last D update again, with
the updated D (as PyTorch's DCGAN example does); further G updates draw new batches. Statistics
stay on the device and are read once per `log_every` steps.
"""
from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ganbench import checkpoint
from ganbench.checkpoint import LoopState, StatelessCheck, identity, save
from ganbench.defaults import step_networks, to_channels_last
from ganbench import failure as failures
from ganbench.failure import Position
from ganbench.incidents import IncidentLog, incident_summary
from ganbench.interrupt import Interrupted, StopRequest
from ganbench.registry import run_plugin_manager
from ganbench.rundir import append_jsonl, write_atomic, write_json
from ganbench.samples import save_samples
from ganbench.settings import speed_changes
from ganbench.state import Batch, Models, Optimizers, Run, Scores, Step, Targets, Updates, discriminate, generate

# metrics.jsonl keys of a train record, in the order they are accumulated on the device. d_acc is
# the share of real scores above 0 and fake scores below 0 (D's accuracy for logit and hinge losses).
TRAIN_KEYS = ("d_loss", "g_loss", "d_penalty", "d_real", "d_fake", "d_acc")

Progress = Callable[[dict[str, Any]], None]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def build_run(spec: Any, run_dir: Path, device: torch.device, at: Position | None = None) -> Run:
    """Seed everything, load the data, register the run's plugins, build models and optimizers.
    `at.plugins` gets the registered plugins at once, so a failure in building the models is placed."""
    s = spec.settings
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    random.seed(spec.seed)  # for plugins that draw from Python's or numpy's streams: they reproduce too
    np.random.seed(spec.seed % 2**32)
    rng = torch.Generator(device=device)
    rng.manual_seed(spec.seed)
    data = s.dataset.instantiate().load(device)
    plugins = [(f"trick:{t.name}", t.instantiate()) for t in s.tricks]
    plugins += [(f"metric:{m.name}", m.instantiate()) for m in s.metrics]
    plugins += [(f"{c.kind}:{c.name}", c.instantiate()) for c in (s.loss, s.latent, s.architecture)]
    plugins += [(f"detector:{d.name}", d.instantiate()) for d in s.detectors]
    plugins += [(f"logger:{lg.name}", lg.instantiate()) for lg in s.loggers]
    pm = run_plugin_manager(plugins, diagnostics=s.diagnostics)
    if at is not None:
        at.plugins = dict(pm.list_name_plugin())
    run = Run(settings=s, seed=spec.seed, device=device, data=data, dir=run_dir, hook=pm.hook, rng=rng,
              updates=Updates(d=s.d_updates, g=s.g_updates), id=spec.run_id,
              plugins=dict(pm.list_name_plugin()))
    models: Models = pm.hook.ganbench_build_models(run=run)
    models.generator.to(device)
    models.discriminator.to(device)
    run.models = models
    pm.hook.ganbench_configure_models(run=run, models=models)
    if s.channels_last:  # after the plugins' changes (spectral norm), before the optimizers see the weights
        to_channels_last(models)
    run.optimizers = Optimizers(
        generator=pm.hook.ganbench_build_optimizer(
            run=run, network="generator", parameters=list(models.generator.parameters()), settings=s.optimizer_g),
        discriminator=pm.hook.ganbench_build_optimizer(
            run=run, network="discriminator", parameters=list(models.discriminator.parameters()), settings=s.optimizer_d),
    )
    return run


def score(discriminator: nn.Module, batch: Batch, combined: bool) -> Scores:
    """D's scores on the batch: two forward passes, or one over the concatenation."""
    if combined:
        labels = None if batch.fake_labels is None else torch.cat([batch.real_labels, batch.fake_labels])
        both = discriminate(discriminator, torch.cat([batch.real, batch.fake]), labels)
        return Scores(real=both[: len(batch.real)], fake=both[len(batch.real):])
    real_labels = None if batch.fake_labels is None else batch.real_labels
    return Scores(real=discriminate(discriminator, batch.real, real_labels),
                  fake=discriminate(discriminator, batch.fake, batch.fake_labels))


def train(run: Run, progress: Progress | None = None, stop: StopRequest | None = None,
          resume: LoopState | None = None, at: Position | None = None) -> tuple[str, str | None]:
    """Train to the end, to the first non-finite value, to an incident whose policy is `stop`, or
    to a stop request (a signal). From step 0, or from `resume` (a checkpoint's loop state).
    Returns (status, reason); `run.done` is the last step finished. `at` follows the loop's phase,
    so that an exception can be placed (ganbench.failure)."""
    s, hook, device = run.settings, run.hook, run.device
    assert run.models is not None and run.optimizers is not None
    D = run.models.discriminator
    step_g, step_d = step_networks(run)  # G and D under the speed settings (the modules themselves by default)
    opt_g, opt_d = run.optimizers.generator, run.optimizers.discriminator
    n = s.batch_size
    metrics_path = run.dir / "metrics.jsonl"
    incidents = IncidentLog(run)
    stop = stop or StopRequest()
    at = at or Position()

    at.phase = "setup"
    loop = resume or LoopState(
        done=0, images_seen=0,
        totals=torch.zeros(len(TRAIN_KEYS), device=device),  # summed since the last log, on the device
        step_counter=torch.zeros((), device=device),
        first_bad=torch.full((), -1.0, device=device),  # first step with a non-finite loss, or -1
        first_bad_keys=torch.zeros(3, dtype=torch.bool, device=device),  # which of the losses it was
        last_log_step=0,
        fixed_z=hook.ganbench_sample_latent(run=run, n=s.grid_size),  # the same noise at every eval point
        fixed_labels=hook.ganbench_sample_labels(run=run, n=s.grid_size),
    )
    ones, zeros = torch.ones(n, device=device), torch.zeros(n, device=device)
    clock = Clock(loop.elapsed_s)
    stateless = StatelessCheck(run)
    ident = identity(run.id, s)

    def write_checkpoint() -> None:
        at.phase = "checkpoint"
        loop.elapsed_s = clock.elapsed()
        save(run, loop, ident, stateless.changed())

    def end(status: str, reason: str | None) -> tuple[str, str | None]:
        run.done = loop.done
        if status != "diverged":
            write_checkpoint()
            at.phase = "end"
            save_generator(run, loop.done)
        return status, reason

    if loop.eval_pending:  # the last process was stopped inside this eval point: do it again
        at.phase = "eval"
        status = eval_point(run, loop, stop, incidents, metrics_path)
        if status:
            return end(*status)

    for index in range(loop.done, s.steps):
        # ---- discriminator: run.updates.d steps ----------------------------------------------
        at.phase = "d"
        D.requires_grad_(True)
        d_updates, g_updates = run.updates.d, run.updates.g
        for update in range(d_updates):
            step = Step(index, "d", update)
            last = update == d_updates - 1
            real, labels = run.data.sample(n, run.rng)
            fake_labels = hook.ganbench_sample_labels(run=run, n=n)
            with torch.set_grad_enabled(last):  # G's first update reuses the last fake batch
                fake = generate(step_g, hook.ganbench_sample_latent(run=run, n=n), fake_labels)
            batch = Batch(real=real, fake=fake.detach(), real_labels=labels, fake_labels=fake_labels)
            hook.ganbench_discriminator_inputs(run=run, step=step, batch=batch)
            scores = score(step_d, batch, combined=s.d_batch == "combined")
            targets = Targets(real=ones.clone(), fake=zeros.clone())
            hook.ganbench_discriminator_targets(run=run, step=step, targets=targets)
            d_loss = hook.ganbench_discriminator_loss(run=run, step=step, scores=scores, targets=targets)
            penalties = hook.ganbench_discriminator_penalty(run=run, step=step, batch=batch, scores=scores)
            d_penalty = torch.stack(penalties).sum() if penalties else zeros[0]
            opt_d.zero_grad(set_to_none=True)
            (d_loss + d_penalty).backward()
            hook.ganbench_after_backward(run=run, step=step, network="discriminator")
            opt_d.step()
            hook.ganbench_after_discriminator_step(run=run, step=step)
        loop.images_seen += d_updates * n
        d_scores = scores

        # ---- generator: run.updates.g steps ----------------------------------------------------
        at.phase = "g"
        D.requires_grad_(False)  # G's backward needs D's input gradients, not its weight gradients
        for update in range(g_updates):
            step = Step(index, "g", update)
            if update > 0:
                real, labels = run.data.sample(n, run.rng)
                fake_labels = hook.ganbench_sample_labels(run=run, n=n)
                fake = generate(step_g, hook.ganbench_sample_latent(run=run, n=n), fake_labels)
            batch = Batch(real=real, fake=fake, real_labels=labels, fake_labels=fake_labels)
            hook.ganbench_discriminator_inputs(run=run, step=step, batch=batch)
            scores = Scores(real=None, fake=discriminate(step_d, batch.fake, batch.fake_labels))
            g_loss = hook.ganbench_generator_loss(run=run, step=step, batch=batch, scores=scores)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            hook.ganbench_after_backward(run=run, step=step, network="generator")
            opt_g.step()
        hook.ganbench_step_end(run=run, step=step)

        # ---- statistics, on the device: no host sync here --------------------------------------
        real_scores, fake_scores = d_scores.real.detach(), d_scores.fake.detach()
        values = torch.stack([d_loss.detach(), g_loss.detach(), d_penalty.detach(),
                              real_scores.mean(), fake_scores.mean(),
                              ((real_scores > 0).float().mean() + (fake_scores < 0).float().mean()) / 2])
        loop.totals += values
        loop.step_counter += 1
        newly_bad = ~torch.isfinite(values[:3]).all() & (loop.first_bad < 0)
        loop.first_bad = torch.where(newly_bad, loop.step_counter - 1, loop.first_bad)
        loop.first_bad_keys = torch.where(newly_bad, ~torch.isfinite(values[:3]), loop.first_bad_keys)

        done = loop.done = run.done = index + 1
        if done % s.log_every == 0 or done == s.steps:
            at.phase = "log"
            record = read_stats(run, loop, clock)
            bad_step = int(loop.first_bad)
            if bad_step >= 0:
                which = [k for k, bad in zip(TRAIN_KEYS, loop.first_bad_keys.tolist()) if bad]
                record["nonfinite"] = {"losses": {"step": bad_step, "keys": which}}
            loop.totals.zero_()
            loop.last_log_step = done
            hook.ganbench_log_record(run=run, step=done, record=record)
            append_jsonl(metrics_path, record)
            hook.ganbench_log(run=run, record=record)  # loggers: the record as written, no device read
            if progress:
                progress(record)
            status = incidents.check(record)
            if "nonfinite" in record:  # nothing left to train: always the end, whatever the policy
                return end("diverged", nonfinite_reason(record["nonfinite"]))
            if status:
                return end(*status)
        if done % s.eval_every == 0 or done == s.steps:
            at.phase = "eval"
            status = eval_point(run, loop, stop, incidents, metrics_path)
            if status:
                return end(*status)
        if stop.requested:
            return end("interrupted", f"interrupted by {stop.name} after step {done}")
        if done % s.checkpoint_every == 0:
            write_checkpoint()
    return end("completed", None)


class Clock:
    """Training wall time, going on from what earlier processes of a resumed run spent."""

    def __init__(self, before: float) -> None:
        self.before = before
        self.started = self.last = time.perf_counter()

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.started

    def lap(self) -> float:
        """Seconds since the last lap (the last log record)."""
        now = time.perf_counter()
        lap, self.last = now - self.last, now
        return lap


def eval_point(run: Run, loop: LoopState, stop: StopRequest, incidents: IncidentLog,
               metrics_path: Path) -> tuple[str, str | None] | None:
    """Evaluate at `loop.done`. A signal during it abandons it: the checkpoint then says to redo it."""
    loop.eval_pending = True
    try:
        with stop.interruptible():
            record = evaluate(run, loop.done, loop.images_seen, loop.fixed_z, loop.fixed_labels)
    except Interrupted as exc:
        return "interrupted", f"{exc} during the eval point at step {loop.done}"
    loop.eval_pending = False
    append_jsonl(metrics_path, record)
    run.hook.ganbench_log(run=run, record=record)
    return incidents.check(record)


def nonfinite_reason(nonfinite: dict[str, dict[str, Any]]) -> str:
    """"non-finite d_loss at step 41; non-finite gradients of discriminator at step 40"."""
    parts = [f"non-finite {' and '.join(v['keys'])} at step {v['step']}" for v in nonfinite.values()]
    return "; ".join(parts)


def read_stats(run: Run, loop: LoopState, clock: Clock) -> dict[str, Any]:
    """One metrics.jsonl train record: means since the last record. The one device read per interval."""
    count = loop.done - loop.last_log_step
    means = (loop.totals / count).tolist()
    elapsed = clock.lap()
    assert run.optimizers is not None
    return {
        "kind": "train",
        "step": loop.done,
        "images_seen": loop.images_seen,
        **dict(zip(TRAIN_KEYS, means)),
        "d_gap": means[TRAIN_KEYS.index("d_real")] - means[TRAIN_KEYS.index("d_fake")],
        "lr_g": run.optimizers.generator.param_groups[0]["lr"],
        "lr_d": run.optimizers.discriminator.param_groups[0]["lr"],
        "sec_per_step": elapsed / count,
        "elapsed_s": clock.elapsed(),
    }


def evaluate(run: Run, done: int, images_seen: int, fixed_z: Tensor, fixed_labels: Tensor | None) -> dict[str, Any]:
    """Sample the fixed noise into samples/, and ask metric plugins for values: the eval record."""
    generator = run.hook.ganbench_eval_generator(run=run)
    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        samples = generate(generator, fixed_z, fixed_labels)
        save_samples(samples, run.data.info, run.dir / "samples" / f"step-{done:07d}.png",
                     modes=getattr(run.data, "modes", None))
        results = run.hook.ganbench_evaluate(run=run, step=done, generator=generator)
    generator.train(was_training)
    record: dict[str, Any] = {"kind": "eval", "step": done,
                              "images_seen": images_seen,
                              "sample_grid": f"samples/step-{done:07d}.png"}
    provenance, better = {}, run.extras.setdefault("metric_better", {})
    # A metric of a run trained in bf16, channels-last or compiled is never ranked with one of an
    # eager fp32 run (ganbench.fid.comparable); at the defaults nothing is added, as before.
    trained = {f"train_{k}": v for k, v in speed_changes(run.settings.core).items()}
    for result in results:
        if result is None:
            continue
        record.update(result.values)
        provenance[result.metric] = {**result.provenance, **trained}
        if result.convergence is not None:
            provenance[result.metric]["convergence"] = result.convergence.record()
        # In every record, not only in status.json at the end: a report built while the suite
        # still runs knows a plugin metric's direction too.
        provenance[result.metric]["better"] = dict(result.better)
        better.update(result.better)
    if provenance:
        record["provenance"] = provenance
    return record


def metric_summary(metrics_path: Path, better: dict[str, str]) -> dict[str, Any]:
    """Final and best value of every metric, with the step of the best, from the eval records."""
    from ganbench.rundir import read_jsonl

    evals = [r for r in read_jsonl(metrics_path) if r.get("kind") == "eval"]
    final, best = {}, {}
    for key, direction in better.items():
        points = [(r["step"], r[key]) for r in evals if isinstance(r.get(key), (int, float))]
        if not points:
            continue
        final[key] = points[-1][1]
        step, value = (min if direction == "min" else max)(points, key=lambda p: p[1])
        best[key] = {"value": value, "step": step}
    return {"final": final, "best": best, "better": better}


def save_generator(run: Run, step: int) -> None:
    """checkpoints/generator.pt: the final generator alone (and the evaluated one, when it differs)."""
    assert run.models is not None
    generator = run.hook.ganbench_eval_generator(run=run)
    state = {"generator": run.models.generator.state_dict(), "step": step}
    if generator is not run.models.generator:
        state["eval_generator"] = generator.state_dict()
    write_atomic(run.dir / "checkpoints" / "generator.pt", lambda f: torch.save(state, f))


def execute(spec: Any, run_dir: Path, device: torch.device, progress: Progress | None = None,
            stop: StopRequest | None = None, restart: bool = False) -> str:
    """Run one spec into `run_dir`, from its last checkpoint when it has a resumable one (and not
    `restart`), recording its status whatever happens. Returns the status."""
    from ganbench.environment import environment, peak_memory, reset_peak_memory

    stop = stop or StopRequest()
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = checkpoint.plan(spec, run_dir, restart, device)
    previous = plan.status if plan.state else {}
    (run_dir / "error.txt").unlink(missing_ok=True)  # an earlier attempt's: the console points failures to it
    if plan.state is None:
        for stale in ("metrics.jsonl", "incidents.jsonl", checkpoint.FILE, "checkpoints/generator.pt"):
            (run_dir / stale).unlink(missing_ok=True)
        for grid in (run_dir / "samples").glob("step-*.png"):
            grid.unlink()
    resumed_from = plan.state["meta"]["step"] if plan.state else None
    write_json(run_dir / "config.json", {"run_id": spec.run_id, **spec.resolved()})
    write_json(run_dir / "env.json", environment(device, spec.seed, spec.suite_file.parent, spec.settings))
    started_at, started = previous.get("started") or now(), time.perf_counter()
    wall_before = previous.get("wall_s") or 0.0
    history = [*previous.get("resumed", []), *([{"from_step": resumed_from, "at": now()}] if plan.state else [])]
    write_json(run_dir / "status.json", {"status": "running", "started": started_at, "step": resumed_from or 0,
                                         "resumed": history, "note": plan.note})
    run, at, failure, tracebacks = None, Position(), None, []
    reset_peak_memory(device)

    def fail(exc: Exception) -> dict[str, Any]:
        """Write the traceback (after any earlier one) to error.txt, and place the exception."""
        tracebacks.append("".join(traceback.format_exception(exc)))
        try:
            text = "\n".join(tracebacks)
            write_atomic(run_dir / "error.txt", lambda f: f.write(text.encode()))
            written = "error.txt"
        except OSError:  # the disk is full: the reason still goes into status.json, or to the suite
            written = None
        step = run.done if run is not None and at.phase != "setup" else (resumed_from or 0)
        return failures.record(exc, at.plugins, step, at.phase, written)

    try:
        with stop.interruptible():  # set-up (data, models) can take a while: a signal ends it at once
            run = build_run(spec, run_dir, device, at)
            loop = checkpoint.restore(run, plan.state) if plan.state else None
            run.done = loop.done if loop else 0
        status, reason = train(run, progress, stop, loop, at)
    except Interrupted as exc:
        status, reason = "interrupted", f"{exc} while the run was being set up"
    except Exception as exc:  # a bug in a plugin, the data, or a full disk: the run fails, the suite goes on
        failure = fail(exc)
        status, reason = "failed", failures.reason(failure)
    summary = {}
    if run is not None:
        try:
            at.phase = "end"
            run.hook.ganbench_run_end(run=run, status=status, reason=reason)
        except Exception as exc:  # a plugin's clean-up fails the run; an earlier failure stays the reason
            later = fail(exc)
            if failure is None:
                failure, status, reason = later, "failed", failures.reason(later)
        summary = metric_summary(run_dir / "metrics.jsonl", run.extras.get("metric_better", {}))
    # A failure's step is where it happened: a failed restore has not yet set run.done.
    step = failure["step"] if failure else run.done if run else (resumed_from or 0)
    write_json(run_dir / "status.json", {
        "status": status, "reason": reason, "failure": failure, "started": started_at, "finished": now(),
        "step": step, "steps": spec.settings.steps,
        "wall_s": round(wall_before + time.perf_counter() - started, 3), "metrics": summary,
        "incidents": incident_summary(run_dir / "incidents.jsonl"), "resumed": history, "note": plan.note,
        "memory": peak_memory(device),
    })
    return status
