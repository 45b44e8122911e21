"""Benchmark (not a test) of torch's CPU thread count per run, alone and beside a busy process.

The workload is the stability suite's vanilla DCGAN (mnist5k, width 32, batch 64, bce), trained in
a fresh process per measurement with the thread count and OMP_WAIT_POLICY under test. "busy" runs
one competing process beside it: a single-threaded matrix-multiply loop, standing for a second run,
a test or anything else on a shared machine. Ratios are milliseconds per step against one thread
under the same load, all measured in this invocation, in alternating order over the repeats; the
median is printed. The summary ratio is two threads with the passive wait policy against one
thread, beside the busy process: the case a run on a shared machine meets. It is what
`ganbench.threads` rests on: cores // jobs threads per run, and the passive wait policy for the
run processes.

    python benchmarks/threads.py                  # about 4 minutes on a 2-core CPU
    python benchmarks/threads.py --steps 60 --repeats 3
    python benchmarks/threads.py --quick          # every measurement at 3 steps (CI runs this)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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
log_every = 1
eval_every = 1000000
metrics = []
detectors = []
diagnostics = false
[[configs]]
name = "vanilla"
"""

# (label, threads, OMP_WAIT_POLICY or None for the runtime's default)
SETTINGS = [("1 thread", 1, None), ("2 threads", 2, None), ("2 threads, passive wait", 2, "PASSIVE")]
# --quick: the whole path at a few steps, one repeat
QUICK = {"steps": 3, "warmup": 2, "repeats": 1}
BUSY = "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True:\n    a = (a @ a).tanh()\n"


def worker(steps: int, warmup: int) -> None:
    """Train `steps` steps after `warmup` warm-up steps; print the seconds per step as JSON."""
    import torch

    from ganbench.suite import load_suite
    from ganbench.trainer import build_run, train

    threads = int(os.environ["GANBENCH_BENCH_THREADS"])
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        # One log record per step times each step on its own (the trainer's clock); the diagnostics
        # are off so that logging every step measures nothing more than the default interval would.
        path = Path(tmp) / "suite.toml"
        path.write_text(SUITE.format(steps=warmup + steps))
        run = build_run(load_suite(path).runs("default")[0], Path(tmp) / "run", torch.device("cpu"))
        records: list[dict] = []
        train(run, progress=records.append)
    timed = records[warmup:]
    print(json.dumps({"sec_per_step": sum(r["sec_per_step"] for r in timed) / len(timed),
                      "threads": torch.get_num_threads()}))


def measure(threads: int, policy: str | None, steps: int, warmup: int, busy: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["GANBENCH_BENCH_THREADS"] = str(threads)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    competitor = subprocess.Popen([sys.executable, "-c", BUSY], env={**env, "OMP_NUM_THREADS": "1"}) if busy else None
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", "--steps", str(steps), "--warmup", str(warmup)], env=env,
                             capture_output=True, text=True, check=True, timeout=1800)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])["sec_per_step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first, in each process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help=f"a few steps and one repeat, where not given: {QUICK}")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.warmup)
        return
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    from ganbench.bench import conditions, load_average, ratio_line

    print(conditions("cpu") + "; each measurement sets its own threads and wait policy")
    print(f"{args.steps} steps after {args.warmup} warm-up steps, x {args.repeats} repeats")
    results: dict[tuple[bool, str], list[float]] = {}
    for repeat in range(args.repeats):
        order = SETTINGS if repeat % 2 == 0 else SETTINGS[::-1]
        for busy in (False, True):
            for label, threads, policy in order:
                results.setdefault((busy, label), []).append(measure(threads, policy, args.steps, args.warmup, busy))
    print(f"{'load':<28}{'setting':<28}{'ms / step':>10}{'vs 1 thread':>14}")
    for busy in (False, True):
        base = statistics.median(results[(busy, SETTINGS[0][0])])
        for label, _, _ in SETTINGS:
            median = statistics.median(results[(busy, label)])
            load = "one busy process beside it" if busy else "alone"
            print(f"{load:<28}{label:<28}{1000 * median:>10.1f}{median / base:>13.2f}x")
    print(f"at the end: {load_average()}")
    busy_one, busy_passive = (statistics.median(results[(True, label)]) for label in (SETTINGS[0][0], SETTINGS[2][0]))
    print(ratio_line("passive-2-threads/1-thread", busy_passive / busy_one,
                     f"ms per step beside one busy process, median of {args.repeats}; below 1 is faster"))


if __name__ == "__main__":
    main()
