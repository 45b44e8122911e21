"""`ganbench bench` runs end to end and prints its ratio (the numbers themselves are not asserted:
speed claims live in the benchmark's output, not in tests)."""
from __future__ import annotations

import torch

from ganbench.bench import run_bench


def test_bench_prints_a_ratio_against_the_plain_loop(capsys):
    assert run_bench(torch.device("cpu"), steps=3, repeats=1) == 0
    out = capsys.readouterr().out
    assert "plain loop" in out and "\nratio ganbench/plain = " in out
