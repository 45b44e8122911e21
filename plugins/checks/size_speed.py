"""Size and speed: parameter counts, one training step's time and peak memory on the chosen
device, and that step time projected over every run of the suite that uses this architecture ×
dataset. Informational: it passes unless a step cannot run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

import ganbench


@dataclass(frozen=True)
class Params:
    warmup: ganbench.PositiveInt = 2  # untimed steps first (allocator, optimizer state)
    timed: ganbench.PositiveInt = 5  # steps timed, beyond a run of `warmup` steps (which cancels set-up costs)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


class SizeSpeed:
    """Parameter counts of G and D, a step's time and peak memory, and the suite's projected training time."""

    name = "size-speed"
    params = Params

    def __init__(self, params: Params) -> None:
        self.p = params

    def diagnose(self, subject: ganbench.CheckSubject) -> ganbench.CheckResult:
        p, device = self.p, subject.device
        run = subject.build()
        assert run.models is not None and run.optimizers is not None
        g_params = sum(q.numel() for q in run.models.generator.parameters())
        d_params = sum(q.numel() for q in run.models.discriminator.parameters())
        subject.train(run, p.warmup)
        seconds = []
        saved = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved[0] += t.numel() * t.element_size()
            return t

        for steps in (p.warmup, p.warmup + p.timed):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            saved[0] = 0
            sync(device)
            start = time.perf_counter()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                subject.train(run, steps)
            sync(device)
            seconds.append(time.perf_counter() - start)
        step = max(seconds[1] - seconds[0], 0.0) / p.timed
        if device.type == "cuda":
            peak, how = float(torch.cuda.max_memory_allocated(device)), "peak allocated"
        else:
            weights = sum(q.numel() * q.element_size() for m in (run.models.generator, run.models.discriminator)
                          for q in m.parameters())
            state = sum(t.numel() * t.element_size() for opt in (run.optimizers.generator, run.optimizers.discriminator)
                        for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
            peak = 2 * weights + state + saved[0] / (p.warmup + p.timed)
            how = "estimated: weights, gradients, optimizer state, tensors saved for backward"
        total_steps = sum(s.settings.steps for s in subject.specs)
        figure = (f"G {g_params:,} and D {d_params:,} parameters; {step * 1000:.1f} ms per step at batch "
                  f"{subject.settings.batch_size} on {device} ({mib(peak)} {how.split(':')[0]}); "
                  f"{len(subject.specs)} run(s), {total_steps:,} steps: about {duration(step * total_steps)} of training")
        values = {"g_parameters": g_params, "d_parameters": d_params, "seconds_per_step": step,
                  "peak_memory_bytes": peak, "memory_how": how, "device": str(device), "runs": len(subject.specs),
                  "steps": total_steps, "projected_seconds": step * total_steps,
                  "timed_config": subject.spec.config}
        return ganbench.CheckResult("ok", figure, "", values)


@ganbench.hookimpl
def ganbench_register_checks():
    return [SizeSpeed]
