"""`ganbench bench`: steps per second of the ganbench trainer against a plain hand-written loop.

Both train the same DCGAN on mnist5k with the non-saturating BCE loss, Adam 2e-4 / (0.5, 0.999),
batch 64, on the same device, in this one process, measured alternately so that machine noise
hits both. The ratio (ganbench / plain) is what matters; the target is >= 0.95.
"""
from __future__ import annotations

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
        print(f"device {device}; DCGAN on mnist5k, bce, batch 64; {steps} timed steps; {repeats} alternating repeats")
        ratios = []
        for r in range(repeats):
            ours = 1.0 / ganbench_loop(spec, device, Path(tmp) / f"run{r}")
            plain = 1.0 / plain_loop(build_run(spec, Path(tmp) / f"plain{r}", device), steps)
            ratios.append(ours / plain)
            print(f"repeat {r + 1}: ganbench {ours:6.2f} steps/s   plain loop {plain:6.2f} steps/s   ratio {ratios[-1]:.3f}")
        median = statistics.median(ratios)
        print(f"median ratio ganbench/plain: {median:.3f} (target >= 0.95)")
    return 0
