"""Every benchmark runs end to end in its --quick mode, so none can rot unnoticed: each exits 0 and
prints what it ran under and its ratio line (`ganbench.bench.RATIO_LINE`), a finite positive
number. The ratios themselves are not asserted: on a shared machine they are noise at this size
(`pytest -m slow -rP tests/test_benchmarks.py` shows each one's lines).

The scripts are found by globbing benchmarks/, so a new benchmark without --quick fails here.
About 3 minutes on an idle 2-core CPU (the FID and estimate checks take the most)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ganbench.bench import RATIO_LINE

ROOT = Path(__file__).parents[1]
BENCHMARKS = ROOT / "benchmarks"
# Modules in benchmarks/ that are not benchmarks themselves.
HELPERS = {"detector_quality/faults.py"}  # fault-injection plugins that detector_quality's suites load
SCRIPTS = sorted(p.relative_to(BENCHMARKS).as_posix() for p in BENCHMARKS.rglob("*.py"))
COMMANDS = {
    **{script: [sys.executable, str(BENCHMARKS / script), "--quick"] for script in SCRIPTS if script not in HELPERS},
    # `ganbench bench` has no --quick; its smallest sizes are the same thing.
    "ganbench bench": [sys.executable, "-m", "ganbench.cli", "bench", "--steps", "3", "--repeats", "1",
                       "--device", "cpu"],
}


def test_helpers_exist():
    """A helper that was moved or renamed must leave this list too, or a benchmark goes unrun."""
    assert HELPERS <= set(SCRIPTS)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COMMANDS))
def test_benchmark_runs_quick_and_prints_its_ratio(name, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GANBENCH_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("GANBENCH_INCEPTION_WEIGHTS", None)
    done = subprocess.run(COMMANDS[name], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{out[-3000:]}\n{done.stderr[-3000:]}"
    assert "ran under: " in out and " load " in out, f"{name} does not say what it ran under:\n{out[-3000:]}"
    ratios = RATIO_LINE.findall(out)
    assert ratios, f"{name} prints no ratio line (`ratio <what> = <value>`):\n{out[-3000:]}"
    print("\n".join(line for line in out.splitlines() if line.startswith(("ran under: ", "at the end: ", "ratio "))))
    for what, value in ratios:
        number = float(value)  # a ValueError names the line's value
        assert math.isfinite(number) and number > 0, f"{name}: ratio {what} = {value}"
