"""Benchmark (not a test) of torch's CPU thread count per run, alone and beside a busy process.

The workload is the stability suite's vanilla DCGAN (mnist5k, width 32, batch 64, bce), trained in
a fresh process per measurement with the thread count and OMP_WAIT_POLICY under test. "busy" runs
one competing process beside it: a single-threaded matrix-multiply loop, standing for a second run,
a test or anything else on a shared machine. Ratios are milliseconds per step against one thread
under the same load, all measured in this invocation, in alternating order over the repeats; the
median is printed. It is what `ganbench.threads` rests on: cores // jobs threads per run, and the
passive wait policy for the run processes.

    python benchmarks/threads.py                  # about 4 minutes on a 2-core CPU
    python benchmarks/threads.py --steps 60 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = """
[suite]
name = "threads"
question = "How fast is one step?"
seeds = [0]
[dataset]
name = "mnist5k"
[defaults]
architecture = {{ name = "dcgan", width = 32 }}
loss = "bce"
batch_size = 64
steps = {steps}
log_every = 1000000
eval_every = 1000000
metrics = []
detectors = []
[[configs]]
name = "vanilla"
"""

# (label, threads, OMP_WAIT_POLICY or None for the runtime's default)
SETTINGS = [("1 thread", 1, None), ("2 threads", 2, None), ("2 threads, passive wait", 2, "PASSIVE")]
BUSY = "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True:\n    a = (a @ a).tanh()\n"


def worker(steps: int) -> None:
    """Train `steps` steps after 10 warm-up steps; print the seconds per step as JSON."""
    import torch

    from ganbench.suite import load_suite
    from ganbench.trainer import build_run, train

    threads = int(os.environ["GANBENCH_BENCH_THREADS"])
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "suite.toml"
        timings = []
        for n in (10, 10 + steps):
            path.write_text(SUITE.format(steps=n))
            spec = load_suite(path).runs("default")[0]
            run = build_run(spec, Path(tmp) / f"run-{n}", torch.device("cpu"))
            started = time.perf_counter()
            train(run)
            timings.append(time.perf_counter() - started)
    print(json.dumps({"sec_per_step": (timings[1] - timings[0]) / steps, "threads": torch.get_num_threads()}))


def measure(threads: int, policy: str | None, steps: int, busy: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["GANBENCH_BENCH_THREADS"] = str(threads)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    competitor = subprocess.Popen([sys.executable, "-c", BUSY], env={**env, "OMP_NUM_THREADS": "1"}) if busy else None
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", "--steps", str(steps)], env=env,
                             capture_output=True, text=True, check=True, timeout=1800)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])["sec_per_step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps)
        return
    print(f"{os.cpu_count()} CPUs, affinity {len(os.sched_getaffinity(0))}; {args.steps} steps x {args.repeats} repeats")
    results: dict[tuple[bool, str], list[float]] = {}
    for repeat in range(args.repeats):
        order = SETTINGS if repeat % 2 == 0 else SETTINGS[::-1]
        for busy in (False, True):
            for label, threads, policy in order:
                results.setdefault((busy, label), []).append(measure(threads, policy, args.steps, busy))
    print(f"{'load':<28}{'setting':<28}{'ms / step':>10}{'vs 1 thread':>14}")
    for busy in (False, True):
        base = statistics.median(results[(busy, SETTINGS[0][0])])
        for label, _, _ in SETTINGS:
            median = statistics.median(results[(busy, label)])
            load = "one busy process beside it" if busy else "alone"
            print(f"{load:<28}{label:<28}{1000 * median:>10.1f}{median / base:>13.2f}x")


if __name__ == "__main__":
    main()
