"""`ganbench estimate`: how long a suite takes at a scale, measured here and projected for one GPU.

Here: one seed of each configuration is built at the chosen scale and trained for a few steps,
timed. Evaluation is timed per image through the metric's own networks (the generator, Inception
for `fid`, the classifier for `classifier`), and FID and KID's host-side maths (a 2048x2048
matrix square root, KID's polynomial kernels) are timed at the suite's sample counts.

On one GPU: a model, not a measurement. The same steps are counted: aten operator calls, FLOPs
(torch's own formulas: convolutions and matrix products) and memory traffic. A step's host work
(Python, hooks, dispatch) does not grow with the batch; its device work does. Timing the step at
the batch B and at B/4 separates the two here. On a GPU the host work stays, scaled to a faster
host, and the device work becomes FLOPs / rate + bytes / bandwidth at GPU_MODEL's ranges; the
optimistic end overlaps host and device work fully, the pessimistic end not at all.

The table's `device model/measured` checks the FLOP-and-bytes model against this machine: the
calibrated model's prediction of a step's batch-proportional time over what was measured.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ganbench.features import eval_samples as generate
from ganbench.suite import RunSpec, Suite
from ganbench.trainer import build_run, train
from ganbench.workcount import GPU_MODEL, Cost, DeviceModel, calibrate, count, sync

PROFILE_WARMUP_STEPS = 3  # allocator and optimizer-state warm-up, neither timed nor counted
MIN_PROFILE_BATCH = 8  # the smaller batch of the host-time measurement (minibatch-std groups need 4)
TIMED_REPEATS = 2  # each timing is the best of this many: the machine may be shared
GENERATE_BATCH = 250  # features.eval_batches' batch size


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def _short(spec: RunSpec, steps: int, batch_size: int | None = None) -> RunSpec:
    """The spec trained for `steps` steps with one log record, no metrics and no eval points."""
    core = dataclasses.replace(spec.settings.core, steps=steps, log_every=steps, eval_every=steps,
                               batch_size=batch_size or spec.settings.batch_size)
    return dataclasses.replace(spec, settings=dataclasses.replace(spec.settings, core=core, metrics=()))


def _foreach_optimizers(run: Any) -> None:
    """Adam and friends default to their multi-tensor (foreach) kernels on CUDA, and to one call
    per parameter on a CPU; count what a GPU would dispatch."""
    for opt in (run.optimizers.generator, run.optimizers.discriminator):
        for group in opt.param_groups:
            if "foreach" in group:
                group["foreach"] = True


@dataclass(frozen=True)
class StepProfile:
    steps: int  # steps timed and counted
    seconds_per_step: float  # measured on this device
    host_seconds_per_step: float  # the part that does not grow with the batch, measured on this device
    per_step: Cost  # counted, with Adam's foreach kernels as on a GPU
    per_step_here: Cost  # counted, with this device's own optimizer kernels


def _timed_run(spec: RunSpec, device: torch.device, steps: int, workdir: Path, batch_size: int | None = None) -> Any:
    """(seconds per step, the run): built, warmed up, then `steps` steps timed, best of TIMED_REPEATS."""
    run = build_run(_short(spec, PROFILE_WARMUP_STEPS, batch_size), workdir, device)
    train(run)
    run.settings = _short(spec, steps, batch_size).settings
    best = math.inf
    for _ in range(TIMED_REPEATS):
        sync(device)
        start = time.perf_counter()
        train(run)
        sync(device)
        best = min(best, (time.perf_counter() - start) / steps)
    return best, run


def profile_steps(spec: RunSpec, device: torch.device, steps: int, workdir: Path, here: DeviceModel) -> StepProfile:
    """Time and count `steps` steps at the spec's batch size B and at b = B/4.

    A step is host work (Python, hooks, dispatch) plus device work. The part that does not grow
    with the batch, h = (B t(b) - b t(B)) / (B - b), also holds device work of fixed size (the
    optimizer's update of every weight), counted the same way and taken out at this machine's
    calibrated speed. What is left is the host time, at least the cheapest operator call each."""
    batch = spec.settings.batch_size
    seconds, run = _timed_run(spec, device, steps, workdir)
    counted = count(lambda: train(run)) * (1 / steps)
    small = batch // 4
    if small >= MIN_PROFILE_BATCH:
        small_seconds, small_run = _timed_run(spec, device, steps, workdir / "small-batch", small)
        small_counted = count(lambda: train(small_run)) * (1 / steps)
        fixed = small_counted * (batch / (batch - small)) + counted * (-small / (batch - small))
        host = (batch * small_seconds - small * seconds) / (batch - small) - here.device_seconds(fixed, 0)
    else:  # too small a batch to split: all of it counts as host time (pessimistic)
        host = seconds
    _foreach_optimizers(run)
    gpu = count(lambda: train(run)) * (1 / steps)
    host = min(max(host, counted.ops * here.op_seconds[0]), seconds)
    return StepProfile(steps, seconds, host, gpu, counted)


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricWork:
    """One metric's work in one run: per eval point where it is due, and once per machine."""

    metric: str
    points: int  # eval points where it runs
    per_point: Cost
    host_seconds_per_point: float = 0.0  # CPU-side maths, timed here
    once: Cost = Cost()  # first use on a machine: real statistics, a classifier (cached after)
    once_key: str = ""  # runs sharing a key share the one-time work
    note: str = ""


def eval_steps(steps: int, eval_every: int) -> list[int]:
    """The steps with an eval point: every eval_every-th step, and the last one."""
    points = list(range(eval_every, steps + 1, eval_every))
    if not points or points[-1] != steps:
        points.append(steps)
    return points


def due_points(steps: int, eval_every: int, every: int) -> int:
    """Eval points where a metric with `every` runs (as features.due decides)."""
    return sum(1 for s in eval_steps(steps, eval_every) if s == steps or (s // eval_every) % every == 0)


def _batched(per_image: Cost, per_batch_ops: float, n: int, batch: int) -> Cost:
    return Cost(per_batch_ops * math.ceil(n / batch), per_image.flops * n, per_image.bytes * n, per_image.seconds * n)


def _per_image(forward: Callable[[int], Any], device: torch.device, timed_batch: int) -> tuple[Cost, float]:
    """(FLOPs, bytes and seconds here of one image, operator calls of one batch) of forward(n):
    counted on one image, timed on `timed_batch` (the batch the metric uses: per-image time depends
    on it) after a warm-up."""
    with torch.no_grad():
        cost = count(lambda: forward(1))
        forward(min(timed_batch, 8))
        sync(device)
        start = time.perf_counter()
        forward(timed_batch)
        sync(device)
        seconds = (time.perf_counter() - start) / timed_batch
    return Cost(0, cost.flops, cost.bytes, seconds), cost.ops


class EvalCounter:
    """Per-image costs of the networks metrics use, counted once and shared between configs."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._inception: dict[int, tuple[Cost, float]] = {}
        self._host: dict[tuple[int, int, int, int], float] = {}

    def inception(self, shape: tuple[int, ...], batch: int) -> tuple[Cost, float]:
        if batch not in self._inception:
            from ganbench import fid, inception

            weights = fid.resolve_weights()
            model = inception.feature_extractor(self.device, weights.path)
            image = torch.zeros(1, 3, shape[-2], shape[-1], dtype=torch.uint8, device=self.device)
            with fid.float32_convolutions():
                self._inception[batch] = _per_image(lambda n: model(image.expand(n, -1, -1, -1)), self.device, batch)
        return self._inception[batch]

    def fid_host_seconds(self, n_gen: int, n_real: int, subset: int, subsets: int) -> float:
        """FID's matrix square root and KID's polynomial kernels, timed here on random features
        (torch-fidelity does both on the CPU, whatever the device). KID is timed on 2 subsets."""
        key = (n_gen, n_real, subset, subsets)
        if key not in self._host:
            import numpy as np
            from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
            from torch_fidelity.metric_kid import kid_features_to_metric

            rng = np.random.default_rng(0)
            a = torch.from_numpy(rng.standard_normal((max(n_gen, 2049), 2048)).astype(np.float32))
            b = torch.from_numpy(rng.standard_normal((max(n_real, 2049), 2048)).astype(np.float32))
            start = time.perf_counter()
            fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(b), False)
            fid_s = time.perf_counter() - start
            start = time.perf_counter()
            kid_features_to_metric(a[:n_gen], b[:n_real], kid_subsets=2, kid_subset_size=subset, verbose=False)
            kid_s = (time.perf_counter() - start) / 2 * subsets
            self._host[key] = fid_s + kid_s
        return self._host[key]


def _generator_cost(run: Any) -> tuple[Cost, float]:
    """(work per sample, operator calls per batch of GENERATE_BATCH) of drawing eval samples."""
    G = run.hook.ganbench_eval_generator(run=run)
    G.eval()
    per_sample, batch_ops = _per_image(lambda n: generate(run, G, n), run.device, GENERATE_BATCH)
    G.train()
    return per_sample, batch_ops


def metric_work(spec: RunSpec, run: Any, counter: EvalCounter) -> list[MetricWork]:
    """The evaluation work of one run at its scale, metric by metric."""
    s = spec.settings
    gen_image, gen_batch_ops = _generator_cost(run)
    points = eval_steps(s.steps, s.eval_every)
    grid = _batched(gen_image, gen_batch_ops, s.grid_size, GENERATE_BATCH)
    work = [MetricWork("sample grid", len(points), grid)]
    for m in s.metrics:
        p = m.params
        due = due_points(s.steps, s.eval_every, getattr(p, "every", 1))
        if m.name == "fid":
            n_real = min(s.real_samples, len(run.data)) if hasattr(run.data, "__len__") else s.real_samples  # as fid.real_set
            inc_image, inc_batch_ops = counter.inception(tuple(s.data.shape), p.batch_size)
            per_point = (_batched(gen_image, gen_batch_ops, s.eval_samples, GENERATE_BATCH)
                         + _batched(inc_image, inc_batch_ops, s.eval_samples, p.batch_size))
            subset = min(p.kid_subset_size, s.eval_samples, n_real)
            host = counter.fid_host_seconds(s.eval_samples, n_real, subset, p.kid_subsets)
            once = _batched(inc_image, inc_batch_ops, n_real, p.batch_size)
            work.append(MetricWork("fid", due, per_point, host, once, f"fid-real:{s.dataset.name}:{n_real}",
                                   "once: real images through Inception"))
        elif m.name == "classifier":
            from ganbench import classifier as clf

            n = p.samples or s.eval_samples
            channels, classes = s.data.shape[0], s.data.num_classes or 10
            net = clf.SmallCnn(channels, classes).to(run.device).eval()
            image = torch.zeros(1, *s.data.shape, device=run.device)
            cls_image, cls_batch_ops = _per_image(lambda k: net(image.expand(k, -1, -1, -1)), run.device,
                                                  clf.EVAL_BATCH)
            per_point = (_batched(gen_image, gen_batch_ops, n, GENERATE_BATCH)
                         + _batched(cls_image, cls_batch_ops, n, clf.EVAL_BATCH))
            # Training: forward and backward (about three forwards) per image and epoch, on the
            # data in memory, or on SAMPLED_DRAWS fixed draws of sampled data.
            real = len(run.data) if hasattr(run.data, "__len__") else clf.SAMPLED_DRAWS
            once = _batched(cls_image * 3, 3 * cls_batch_ops, real * clf.EPOCHS, clf.BATCH_SIZE)
            work.append(MetricWork("classifier", due, per_point, 0.0, once, f"classifier:{s.dataset.name}",
                                   "once: the classifier's training"))
        elif m.name == "mixture-modes":
            per_point = _batched(gen_image, gen_batch_ops, p.samples, GENERATE_BATCH)
            work.append(MetricWork("mixture-modes", due, per_point))
        else:
            work.append(MetricWork(m.name, due, Cost(), note="not estimated: a third-party metric"))
    return work


# --------------------------------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------------------------------


@dataclass
class ConfigEstimate:
    config: str
    steps: int
    profile: StepProfile
    metrics: list[MetricWork]
    host_seconds_per_step: float = 0.0  # what the projection uses (see `pooled_host_seconds`)

    def eval_cost(self) -> Cost:
        total = Cost()
        for m in self.metrics:
            total = total + m.per_point * m.points
        return total

    def host_seconds(self) -> float:
        return sum(m.host_seconds_per_point * m.points for m in self.metrics)


@dataclass
class SuiteEstimate:
    suite: str
    scale: str
    seeds: int
    device: str
    here: DeviceModel
    configs: list[ConfigEstimate] = field(default_factory=list)
    host_seconds_per_op: float = 0.0  # the median over configurations, measured here

    def once(self) -> dict[str, MetricWork]:
        return {m.once_key: m for c in self.configs for m in c.metrics if m.once_key}

    def device_check(self, c: ConfigEstimate) -> float | None:
        """The batch-proportional part of a step here, as the calibrated model predicts it over
        as measured (t(B) - h): 1.0 is a perfect prediction. None when there is no such part."""
        measured = c.profile.seconds_per_step - c.host_seconds_per_step
        if measured <= 0:
            return None
        return self.here.device_seconds(c.profile.per_step_here, 0) / measured

    def run_seconds_here(self, c: ConfigEstimate) -> float:
        """Training, evaluation's networks and FID's host maths, each as timed here."""
        return c.steps * c.profile.seconds_per_step + c.eval_cost().seconds + c.host_seconds()

    def run_seconds_gpu(self, c: ConfigEstimate) -> tuple[float, float]:
        train_fast, train_slow = GPU_MODEL.seconds(c.profile.per_step, host=c.host_seconds_per_step)
        eval_fast, eval_slow = GPU_MODEL.seconds(c.eval_cost())
        host = c.host_seconds()
        return c.steps * train_fast + eval_fast + host, c.steps * train_slow + eval_slow + host

    def totals(self) -> dict[str, Any]:
        once_here = sum(m.once.seconds for m in self.once().values())
        once_gpu = [GPU_MODEL.seconds(m.once) for m in self.once().values()]
        here = sum(self.run_seconds_here(c) for c in self.configs) * self.seeds + once_here
        gpu = [self.run_seconds_gpu(c) for c in self.configs]
        return {
            "here_s": here,
            "gpu_s": [sum(g[i] for g in gpu) * self.seeds + sum(o[i] for o in once_gpu) for i in (0, 1)],
            "once_here_s": once_here,
            "once_gpu_s": [sum(o[i] for o in once_gpu) for i in (0, 1)],
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite, "scale": self.scale, "seeds": self.seeds, "device": self.device,
            "host_sec_per_op_here": self.host_seconds_per_op,
            "here_model": dataclasses.asdict(self.here), "gpu_model": dataclasses.asdict(GPU_MODEL),
            "configs": [{
                "config": c.config, "steps": c.steps, "profiled_steps": c.profile.steps,
                "sec_per_step_here": c.profile.seconds_per_step,
                "host_sec_per_step_measured": c.profile.host_seconds_per_step,
                "host_sec_per_step_here": c.host_seconds_per_step,
                "device_model_over_measured_here": self.device_check(c),
                "ops_per_step": c.profile.per_step.ops, "flops_per_step": c.profile.per_step.flops,
                "eval": [dataclasses.asdict(m) for m in c.metrics],
                "run_s_here": self.run_seconds_here(c), "run_s_gpu": list(self.run_seconds_gpu(c)),
            } for c in self.configs],
            "totals": self.totals(),
        }


def estimate_suite(suite: Suite, scale: str, device: torch.device, device_label: str, only: list[str] | None = None,
                   max_steps: int = 100, progress: Callable[[str], None] | None = None) -> SuiteEstimate:
    """Profile one seed of each configuration at `scale` (`max_steps` steps at most, or the log interval)."""
    specs = [s for s in suite.runs(scale, only) if s.seed == suite.header.seeds[0]]
    here = calibrate(device)
    result = SuiteEstimate(suite.name, scale, len(suite.header.seeds), device_label, here)
    counter = EvalCounter(device)
    with tempfile.TemporaryDirectory(prefix="ganbench-estimate-") as tmp:
        for i, spec in enumerate(specs):
            if progress:
                progress(f"[{i + 1}/{len(specs)}] {spec.config}")
            steps = max(1, min(max_steps, spec.settings.log_every, spec.settings.steps))
            workdir = Path(tmp) / f"run{i}"
            profile = profile_steps(spec, device, steps, workdir, here)
            run = build_run(spec, workdir / "eval", device)
            result.configs.append(ConfigEstimate(spec.config, spec.settings.steps, profile,
                                                 metric_work(spec, run, counter)))
    result.host_seconds_per_op = pooled_host_seconds(result.configs)
    return result


def pooled_host_seconds(configs: list[ConfigEstimate]) -> float:
    """Set each configuration's host time per step to its operator count times the median host
    time per operator over all of them. One configuration's h is the difference of two timings
    and noisy (configurations doing the same work measured 2-9 ms a step on a shared 2-core CPU);
    host time follows the operator count, and the median over the suite is steadier."""
    per_op = statistics.median(c.profile.host_seconds_per_step / c.profile.per_step_here.ops for c in configs)
    for c in configs:
        c.host_seconds_per_step = min(per_op * c.profile.per_step_here.ops, c.profile.seconds_per_step)
    return per_op


# --------------------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """"42 s", "7.5 min", "3.2 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def span(pair: tuple[float, float] | list[float]) -> str:
    return f"{duration(pair[0])} - {duration(pair[1])}"


def print_estimate(e: SuiteEstimate, console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{e.suite} at scale {e.scale}: one run of each config (x {e.seeds} seeds in the suite)")
    for name in ("config", "steps", "ops/step", "MFLOP/step", "MB/step", "s/step here", "host share",
                 "device model/measured", "eval points", "run here", "run on one GPU"):
        table.add_column(name, justify="left" if name in ("config", "eval points") else "right",
                         no_wrap=name in ("config", "eval points", "run on one GPU"))
    for c in e.configs:
        check = e.device_check(c)
        evals = ", ".join(f"{m.metric} x{m.points}" for m in c.metrics if m.metric != "sample grid") or "-"
        per_step = c.profile.per_step
        table.add_row(c.config, f"{c.steps:,}", f"{per_step.ops:,.0f}", f"{per_step.flops / 1e6:,.1f}",
                      f"{per_step.bytes / 1e6:,.1f}", f"{c.profile.seconds_per_step:.4f}",
                      f"{c.host_seconds_per_step / c.profile.seconds_per_step:.0%}",
                      "-" if check is None else f"{check:.2f}", evals,
                      duration(e.run_seconds_here(c)), span(e.run_seconds_gpu(c)))
    console.print(table)
    t = e.totals()
    runs = len(e.configs) * e.seeds
    console.print(f"whole suite ({runs} runs, one at a time): here ({e.device}) about {duration(t['here_s'])}; "
                  f"on one GPU {span(t['gpu_s'])} (projected)")
    for m in e.once().values():
        console.print(f"  included, once per machine and cached after: {m.note.removeprefix('once: ')}: "
                      f"here {duration(m.once.seconds)}, GPU {span(GPU_MODEL.seconds(m.once))}")
    for m in {m.metric: m for c in e.configs for m in c.metrics if m.note.startswith("not estimated")}.values():
        console.print(f"  [yellow]{m.metric}: {m.note}; its time is not included[/yellow]")
    profiled = e.configs[0].profile.steps if e.configs else 0
    console.print(f"[dim]Here: training timed over {profiled} steps per config (best of {TIMED_REPEATS}), at its "
                  f"batch and a quarter of it; host time {e.host_seconds_per_op * 1e6:.0f} us per operator call "
                  "(the median over configs); evaluation timed per image, "
                  f"FID/KID host maths timed at the suite's sample counts. On one GPU: a model, not a measurement: "
                  f"host time as measured here x {GPU_MODEL.host_scale[0]}-{GPU_MODEL.host_scale[1]} "
                  f"(+{GPU_MODEL.launch_seconds[1] * 1e6:.0f} us per operator at worst), "
                  f"{GPU_MODEL.flops_per_second[1] / 1e12:.0f}-{GPU_MODEL.flops_per_second[0] / 1e12:.0f} TFLOP/s, "
                  f"{GPU_MODEL.bytes_per_second[1] / 1e12:.1f}-{GPU_MODEL.bytes_per_second[0] / 1e12:.0f} TB/s, "
                  "FID/KID host maths as here (docs/suites.md). The device-model check uses this machine's "
                  f"{e.here.flops_per_second[0] / 1e9:.0f} GFLOP/s and {e.here.bytes_per_second[0] / 1e9:.0f} GB/s, "
                  "measured now.[/dim]")
