"""`ganbench bench`: steps per second of the ganbench trainer against a plain hand-written loop.

Both train the same DCGAN on mnist5k with the non-saturating BCE loss, Adam 2e-4 / (0.5, 0.999),
batch 64, on the same device, in this one process, measured alternately so that machine noise
hits both. The ratio (ganbench / plain) is what matters; the target is >= 0.95.

Also what every benchmark (this one and the scripts in benchmarks/) prints: `conditions()`, the
threads and machine load it ran under, first; `ratio_line()`, its one summary figure, last.
"""
from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ganbench.suite import load_suite
from ganbench.trainer import build_run, train

BENCH_SUITE = """
[suite]
name = "bench"
question = "How fast is the trainer against a plain loop?"
seeds = [0]
[dataset]
name = "mnist5k"
[defaults]
architecture = "dcgan"
loss = "bce"
batch_size = 64
steps = {steps}
log_every = {log_every}
eval_every = 1000000
metrics = []
[[configs]]
name = "dcgan-bce"
"""

# A benchmark's summary line: "ratio ganbench/plain = 0.983  (median of 3; target >= 0.95)".
# tests/test_benchmarks.py looks for it in each benchmark's output.
RATIO_LINE = re.compile(r"^ratio (?P<what>\S+) = (?P<value>\S+)", re.MULTILINE)


def ratio_line(what: str, value: float, note: str = "") -> str:
    """The summary line of a benchmark: `what` is one word naming the ratio ("ganbench/direct")."""
    assert what and not any(c.isspace() for c in what), what
    return f"ratio {what} = {value:.3f}" + (f"  ({note})" if note else "")


def load_average() -> str:
    """The machine's load (runnable processes, averaged over 1, 5 and 15 minutes)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:  # not available on this system
        return "load unknown"
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)"


def cpu_model() -> str | None:
    """The CPU's name from /proc/cpuinfo (Linux), else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def conditions(device: torch.device | str | None = None) -> str:
    """What a benchmark runs under, in one line, so that a reader can judge a ratio measured on a
    busy machine: a ratio of two timings shifts when the load changes between them, and one
    process with two OpenMP threads beside a busy one ran several times slower than with one."""
    from ganbench.threads import WAIT_POLICY, usable_cores

    threads = torch.get_num_threads()
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", WAIT_POLICY) if k in os.environ]
    cpus = f"{usable_cores()} usable of {os.cpu_count()} CPUs"
    model = cpu_model()
    device = torch.device(device if device is not None else "cpu")
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    return (f"ran under: torch {torch.__version__}, {threads} thread{'s' * (threads != 1)}"
            f"{' (' + ', '.join(env) + ')' if env else ''}; {load_average()}; {cpus}"
            f"{' (' + model + ')' if model else ''}; device {device}{gpu}")


def plain_loop(run, steps: int) -> float:
    """The baseline: the textbook DCGAN loop (PyTorch's dcgan example), same models and data.
    Returns seconds per step."""
    G, D = run.models.generator, run.models.discriminator
    opt_g, opt_d = run.optimizers.generator, run.optimizers.discriminator
    n, z_dim, device = run.settings.batch_size, run.settings.z_dim, run.device
    ones, zeros = torch.ones(n, device=device), torch.zeros(n, device=device)
    x = run.data
    for i in range(steps + 1):
        if i == 1:  # the first step warms up allocators; time the rest
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        real, _ = x.sample(n, run.rng)
        fake = G(torch.randn(n, z_dim, device=device, generator=run.rng))
        d_loss = (F.binary_cross_entropy_with_logits(D(real), ones)
                  + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = F.binary_cross_entropy_with_logits(D(fake), ones)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def ganbench_loop(spec, device: torch.device, workdir: Path) -> float:
    """Seconds per step of the ganbench trainer, from its own log records after the first."""
    run = build_run(spec, workdir, device)
    records: list[dict] = []
    train(run, progress=records.append)
    timed = records[1:]
    return sum(r["sec_per_step"] for r in timed) / len(timed)


def run_bench(device: torch.device, steps: int = 60, repeats: int = 3) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        suite_file = Path(tmp) / "bench.toml"
        log_every = max(1, steps // 3)
        suite_file.write_text(BENCH_SUITE.format(steps=steps + log_every, log_every=log_every))
        spec = load_suite(suite_file).runs("default")[0]
        print(conditions(device))
        print(f"device {device}; DCGAN on mnist5k, bce, batch 64; {steps} timed steps; {repeats} alternating repeats")
        ratios = []
        for r in range(repeats):
            ours = 1.0 / ganbench_loop(spec, device, Path(tmp) / f"run{r}")
            plain = 1.0 / plain_loop(build_run(spec, Path(tmp) / f"plain{r}", device), steps)
            ratios.append(ours / plain)
            print(f"repeat {r + 1}: ganbench {ours:6.2f} steps/s   plain loop {plain:6.2f} steps/s   ratio {ratios[-1]:.3f}")
        print(f"at the end: {load_average()}")
        print(ratio_line("ganbench/plain", statistics.median(ratios), f"steps/s, median of {repeats}; target >= 0.95"))
    return 0
