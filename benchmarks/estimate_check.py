"""Benchmark (not a test): `ganbench estimate`'s time for this machine against a real run of the
same suite, measured in the same process tree, one after the other.

The suite is small enough for a CPU (DCGAN on mnist5k, 3 configurations, 300 steps, the
classifier at every eval point and FID on 256 samples at the last) and starts from an empty
ganbench cache, so the one-time work the estimate adds (real statistics through Inception, the
classifier's training) happens in the run as well. It prints, per run, the estimated and the
measured seconds (`wall_s` in status.json) and their ratio, then the same for the whole suite.
Only the estimate for this machine can be checked here; the GPU projection needs a GPU.

    python benchmarks/estimate_check.py            # about 12 minutes on a 2-core CPU
    python benchmarks/estimate_check.py --quick    # one config at 20 steps and a few samples (CI runs this)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = """
[suite]
name = "estimate-check"
question = "Does the estimate for this machine match a real run?"
seeds = [0]
[dataset]
name = "mnist5k"
[defaults]
architecture = "dcgan"
batch_size = 64
steps = {steps}
log_every = {log_every}
eval_every = {eval_every}
eval_samples = {eval_samples}
real_samples = {real_samples}
metrics = ["classifier", {{ name = "fid", every = 2 }}]
[[configs]]
name = "vanilla"
"""
MORE_CONFIGS = """
[[configs]]
name = "spectral-norm"
tricks = ["spectral-norm"]
[[configs]]
name = "wgan-gp"
loss = "wgan-gp"
"""
SIZES = {"steps": 300, "log_every": 50, "eval_every": 150, "eval_samples": 256, "real_samples": 1000}
# --quick: every part (both metrics and their one-time work) in one config, at a few steps and samples
QUICK = {"steps": 20, "log_every": 10, "eval_every": 10, "eval_samples": 32, "real_samples": 64}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"a smaller suite: {QUICK}")
    args = parser.parse_args()
    from ganbench.bench import conditions, load_average, ratio_line

    sizes = QUICK if args.quick else SIZES
    print(conditions("cpu") + "; the runs take the threads `ganbench run` gives them")
    print("suite: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    with tempfile.TemporaryDirectory(prefix="ganbench-estimate-check-") as tmp:
        root = Path(tmp)
        suite = root / "suite.toml"
        suite.write_text(SUITE.format(**sizes) + ("" if args.quick else MORE_CONFIGS))
        env = {**os.environ, "GANBENCH_CACHE_DIR": str(root / "cache")}
        ganbench = [sys.executable, "-m", "ganbench.cli"]
        estimate = json.loads(subprocess.run([*ganbench, "estimate", str(suite), "--json"], env=env, check=True,
                                             capture_output=True, text=True).stdout)
        start = time.perf_counter()
        subprocess.run([*ganbench, "run", str(suite), "--scale", "default", "--out", str(root / "out")], env=env,
                       check=True, capture_output=True)
        elapsed = time.perf_counter() - start
        measured, started = {}, {}
        for status_file in (root / "out" / "runs").glob("*/status.json"):
            config = json.loads((status_file.parent / "config.json").read_text())["config"]
            status = json.loads(status_file.read_text())
            measured[config], started[config] = status["wall_s"], status["started"]
    once = estimate["totals"]["once_here_s"]
    first = min(started, key=started.get)  # the one-time work falls in the first run
    print(f"{'config':16s} {'estimated s':>12s} {'measured s':>11s} {'ratio':>6s}")
    for c in estimate["configs"]:
        ours, real = c["run_s_here"] + (once if c["config"] == first else 0.0), measured[c["config"]]
        print(f"{c['config']:16s} {ours:12.1f} {real:11.1f} {ours / real:6.2f}")
    print(f"(the estimate for {first}, the first run, includes the one-time work: {once:.1f} s, cached after)")
    total_est, total_real = estimate["totals"]["here_s"], sum(measured.values())
    print(f"{'all runs':16s} {total_est:12.1f} {total_real:11.1f} {total_est / total_real:6.2f}")
    print(f"the whole `ganbench run` (process starts and the report included): {elapsed:.1f} s")
    print(f"at the end: {load_average()}")
    print(ratio_line("estimate/measured", total_est / total_real, "seconds of all runs, estimated for this machine"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
