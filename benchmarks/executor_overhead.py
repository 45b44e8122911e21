"""Benchmark (not a test) of what an executor costs: the same 8-run suite through the local
executor (--jobs 2) and through Ray on 2 CPUs, then the local executor at several --jobs on one
device, with the threads each run got.

The suite is 8 runs (8 seeds) of a small MLP GAN on the 8-Gaussian ring. Each measurement calls
`ganbench.executor.run_suite` into a fresh folder, as `ganbench run` does, and times it end to end
(cold: what one `ganbench run` pays, the local forkserver's start, or the local Ray instance's
start, its workers importing torch, the shared-storage check and the shutdown; warm: the same
suite again with everything up, which is what a user of a running Ray cluster pays). Per-run start-up overhead is the wall time the runs did not spend training:
(wall x slots - sum of the runs' own wall_s) / runs, where slots is how many run at once and wall_s
is what each run's status.json records from its start to its end.

    python benchmarks/executor_overhead.py              # 8 runs of 400 steps, about 4 minutes on 2 cores
    python benchmarks/executor_overhead.py --steps 1000
    python benchmarks/executor_overhead.py --quick      # 8 runs of 40 steps (CI runs this)
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

SUITE = """
[suite]
name = "executor-overhead"
question = "What does an executor cost per run?"
seeds = [0, 1, 2, 3, 4, 5, 6, 7]
[dataset]
name = "ring8"
[defaults]
architecture = {{ name = "mlp", width = 64 }}
batch_size = 64
steps = {steps}
log_every = {log_every}
eval_every = 1000000
checkpoint_every = {steps}
metrics = []
[[configs]]
name = "mlp"
"""
QUICK = {"steps": 40}


def measure(suite_path: Path, work: Path, label: str, jobs: int, executor: str = "local",
            options: dict | None = None) -> dict:
    """One run of the whole suite into a fresh folder: wall time, threads per run, the runs' own time."""
    import torch
    from rich.console import Console

    from ganbench import threads
    from ganbench.executor import run_suite
    from ganbench.suite import load_suite

    suite = load_suite(suite_path)
    specs = suite.runs("default")
    out = work / label.replace(" ", "-")
    quiet = Console(file=io.StringIO(), force_terminal=False)
    with threads.chosen(jobs if executor == "local" else 1) as choice:
        began = time.perf_counter()
        outcomes = run_suite(suite, specs, out, torch.device("cpu"), jobs=jobs, console=quiet, threads=choice.threads,
                             executor=executor, executor_options=options)
        wall = time.perf_counter() - began
    bad = [o for o in outcomes if o.status != "completed"]
    if bad:
        raise SystemExit(f"{label}: {bad[0].spec.config} seed {bad[0].spec.seed} {bad[0].status}: {bad[0].reason}")
    own = [json.loads((o.run_dir / "status.json").read_text())["wall_s"] for o in outcomes]
    per_run = threads.per_run(1, cores=1)[0] if executor == "ray" else choice.threads
    why = "cpus_per_run = 1" if executor == "ray" else choice.why
    if executor == "ray" and per_run != 1:
        why = "OMP_NUM_THREADS"
    return {"label": label, "wall": wall, "own": sum(own), "runs": len(own), "threads": per_run, "why": why,
            "slots": 2 if executor == "ray" else max(1, jobs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="steps per run")
    parser.add_argument("--quick", action="store_true", help=f"short runs, where not given: {QUICK}")
    args = parser.parse_args()
    if args.quick and args.steps == parser.get_default("steps"):
        args.steps = QUICK["steps"]
    import ray

    from ganbench.bench import conditions, load_average, ratio_line

    print(conditions("cpu") + "; each measurement sets its own threads per run")
    work = Path(tempfile.mkdtemp(prefix="gbx"))
    ray_dir = tempfile.mkdtemp(prefix="gbr", dir="/tmp")  # Ray's socket paths must stay short
    try:
        suite = work / "suite.toml"
        suite.write_text(SUITE.format(steps=args.steps, log_every=max(1, args.steps // 4)))
        ray_options = {"num_cpus": 2, "temp_dir": ray_dir}
        print(f"8 runs of {args.steps} steps (MLP width 64, batch 64, ring8), on the CPU")
        # Cold: what one `ganbench run` pays, the local forkserver's start (torch and the plugins
        # imported once) or the local Ray instance's; warm: the same suite again, everything up.
        results = [measure(suite, work, "local --jobs 2, cold", 2)]
        results.append(measure(suite, work, "ray, cold", 1, "ray", ray_options))
        results.append(measure(suite, work, "local --jobs 2, warm", 2))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=ray_dir, logging_level="WARNING")
        try:  # an instance already up, as on a running cluster: the executor connects to it
            measure(suite, work, "ray, warming", 1, "ray", ray_options)  # its workers import torch once
            results.append(measure(suite, work, "ray, warm", 1, "ray", ray_options))
        finally:
            ray.shutdown()
        for jobs in (1, 4):
            results.append(measure(suite, work, f"local --jobs {jobs}", jobs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ray_dir, ignore_errors=True)
    print(f"{'executor':<22}{'wall s':>8}{'runs at once':>14}{'threads/run':>13}  {'start-up s/run':>15}  why threads")
    for r in results:
        overhead = (r["wall"] * r["slots"] - r["own"]) / r["runs"]
        print(f"{r['label']:<22}{r['wall']:>8.1f}{r['slots']:>14}{r['threads']:>13}  {overhead:>15.2f}  {r['why']}")
    wall = {r["label"]: r["wall"] for r in results}
    print(f"at the end: {load_average()}")
    print(ratio_line("ray-warm/local-warm", wall["local --jobs 2, warm"] / wall["ray, warm"],
                     "throughput of ray on a running 2-CPU instance over local --jobs 2, both started; target >= 0.9"))
    print(ratio_line("ray-cold/local-cold", wall["local --jobs 2, cold"] / wall["ray, cold"],
                     "the same for one `ganbench run` each: the local Ray instance started and stopped, "
                     "the forkserver started"))

if __name__ == "__main__":
    main()
