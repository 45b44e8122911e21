"""Benchmark (not a test) of the diagnostics' cost: steps per second with `diagnostics = true`
against `diagnostics = false`, on the DCGAN mnist5k configuration of suites/stability.toml (width
32, batch 64, bce), in this one process, at the default log interval (50 steps), per-layer norms,
spectral norms and batch diversity included. Both sides run every detector they can; the
difference is the measurement itself. Measured alternately (the order flips every repeat) so
machine noise hits both; the median ratio (on / off) is what matters, and the target is >= 0.97.

A logger (issue 18) is measured the same way: the same configuration with diagnostics on and
`loggers = ["tensorboard"]`, against diagnostics on alone; its target is also >= 0.97. It runs
when the tensorboard extra is installed (`pip install 'ganbench[tensorboard]'`).

On a shared machine the ratio of two wall-clock timings scatters by several percent. The
benchmark therefore also times the diagnostics' own hook calls inside the "on" runs and prints
their share of the training time: a direct measurement that machine noise cannot inflate.

    python benchmarks/diagnostics_overhead.py                 # about 2 minutes on a 2-core CPU
    python benchmarks/diagnostics_overhead.py --quick         # every step at 10 steps (CI runs this)
    python benchmarks/diagnostics_overhead.py --steps 300 --repeats 7
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ganbench import diagnostics
from ganbench.bench import conditions, load_average, ratio_line
from ganbench.suite import load_suite
from ganbench.trainer import build_run, train

SUITE = """
[suite]
name = "diagnostics-overhead"
question = "What do the diagnostics cost?"
seeds = [0]
[dataset]
name = "mnist5k"
[defaults]
architecture = {{ name = "dcgan", width = 32 }}
loss = "bce"
batch_size = 64
steps = {steps}
log_every = {log_every}
eval_every = 1000000
metrics = []
[[configs]]
name = "on"
diagnostics = true
[[configs]]
name = "off"
diagnostics = false
"""
LOGGED = """
[[configs]]
name = "logged"
diagnostics = true
loggers = ["tensorboard"]
"""


# --quick: the whole path in a few steps, diagnostics logged twice, one repeat
QUICK = {"steps": 10, "log_every": 5, "repeats": 1}

HOOKS = ("ganbench_after_backward", "ganbench_discriminator_inputs", "ganbench_log_record")


class TimedDiagnostics(diagnostics.Diagnostics):
    """The core's diagnostics, with the time spent inside each of its hooks added up."""

    seconds = 0.0


def _timed(name: str):
    original = getattr(diagnostics.Diagnostics, name)

    @functools.wraps(original)  # pluggy reads the argument names through __wrapped__; keeps tryfirst
    def hook(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            TimedDiagnostics.seconds += time.perf_counter() - start

    return hook


for _name in HOOKS:
    setattr(TimedDiagnostics, _name, _timed(_name))


def steps_per_second(spec, workdir: Path, device: torch.device) -> float:
    run = build_run(spec, workdir, device)
    start = time.perf_counter()
    status, _ = train(run)
    run.hook.ganbench_run_end(run=run, status=status, reason=None)  # a logger's last write and close count too
    if device.type == "cuda":
        torch.cuda.synchronize()
    assert status == "completed", status
    return spec.settings.steps / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="steps per measurement (3 log intervals at 150)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating measurements of each")
    parser.add_argument("--log-every", type=int, default=50, help="steps between log records (default 50)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help=f"a few steps and one repeat, where not given: {QUICK}")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    device = torch.device(args.device)
    print(conditions(device))
    with tempfile.TemporaryDirectory() as tmp:
        suite_file = Path(tmp) / "suite.toml"
        with_logger = importlib.util.find_spec("tensorboard") is not None
        suite_file.write_text(SUITE.format(steps=args.steps, log_every=args.log_every) + (LOGGED if with_logger else ""))
        on, off, *logged = load_suite(suite_file).runs("default")
        print(f"device {device}; DCGAN width 32 on mnist5k, bce, batch 64, log every {args.log_every}; "
              f"{args.steps} steps per measurement; {args.repeats} alternating repeats")
        ratios, shares, logger_ratios = [], [], []
        original, diagnostics.Diagnostics = diagnostics.Diagnostics, TimedDiagnostics
        try:
            for r in range(args.repeats):
                if logged and r % 2 == 1:  # the logger's run flips sides too: first here, last in even repeats
                    tb = steps_per_second(logged[0], Path(tmp) / f"logged{r}", device)
                TimedDiagnostics.seconds = 0.0
                if r % 2 == 0:
                    with_diag = steps_per_second(on, Path(tmp) / f"on{r}", device)
                    hook_seconds = TimedDiagnostics.seconds
                    without = steps_per_second(off, Path(tmp) / f"off{r}", device)
                else:
                    without = steps_per_second(off, Path(tmp) / f"off{r}", device)
                    with_diag = steps_per_second(on, Path(tmp) / f"on{r}", device)
                    hook_seconds = TimedDiagnostics.seconds
                ratios.append(with_diag / without)
                shares.append(hook_seconds / (on.settings.steps / with_diag))
                print(f"repeat {r + 1}: diagnostics on {with_diag:6.2f} steps/s   off {without:6.2f} steps/s   "
                      f"ratio {ratios[-1]:.3f}   time in diagnostics hooks {100 * shares[-1]:.2f}%")
                if logged:  # tensorboard on (diagnostics on) against the same without it
                    if r % 2 == 0:
                        tb = steps_per_second(logged[0], Path(tmp) / f"logged{r}", device)
                    logger_ratios.append(tb / with_diag)
                    print(f"          tensorboard logger {tb:6.2f} steps/s against diagnostics on alone "
                          f"{with_diag:6.2f} steps/s   ratio {logger_ratios[-1]:.3f}")
        finally:
            diagnostics.Diagnostics = original
        print(f"median time in the diagnostics' hooks: {100 * statistics.median(shares):.2f}% of training "
              f"(ratio {1 - statistics.median(shares):.3f} if that were all of it)")
        print(f"at the end: {load_average()}")
        print(ratio_line("on/off", statistics.median(ratios),
                         f"steps/s with diagnostics on against off, median of {args.repeats}; target >= 0.97"))
        if logger_ratios:
            print(ratio_line("tensorboard/none", statistics.median(logger_ratios),
                             f"steps/s with the tensorboard logger against none (diagnostics on in both), "
                             f"median of {args.repeats}; target >= 0.97"))
        else:
            print("tensorboard logger: not measured (pip install 'ganbench[tensorboard]')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
