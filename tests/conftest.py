"""Shared helpers: tiny suites written to a temporary folder, and the devices tests run on."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import torch

TINY_SUITE = """
[suite]
name = "tiny"
question = "Does the harness train end to end?"
seeds = [0]

[dataset]
name = "mnist5k"

[defaults]
architecture = {{ name = "dcgan", width = 8 }}
batch_size = 8
steps = 2
log_every = 1
eval_every = 2
grid_size = 4
metrics = []

[[configs]]
name = "a"
{extra}
"""


@pytest.fixture
def write_suite(tmp_path: Path):
    """write_suite(text, name="suite.toml") -> the path of a suite file in tmp_path."""

    def write(text: str, name: str = "suite.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def tiny_suite(write_suite):
    """A valid 2-step mnist5k suite; `extra` lines go into its one config."""

    def make(extra: str = "", name: str = "suite.toml") -> Path:
        return write_suite(TINY_SUITE.format(extra=textwrap.dedent(extra)), name)

    return make


@pytest.fixture
def one_thread():
    """Tiny convolutions are dominated by thread hand-offs; one thread keeps each test well under a second."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def available_devices() -> list[str]:
    """The devices `device`-parametrised tests run on: cpu, plus cuda when one is present.
    GANBENCH_TEST_DEVICES (a comma list) narrows them: benchmarks/gpu_check.py sets it to cuda."""
    chosen = os.environ.get("GANBENCH_TEST_DEVICES", "").strip()
    if chosen:
        return [d.strip() for d in chosen.split(",") if d.strip()]
    return ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


DEVICES = available_devices()
# cuBLAS reads this when it starts, and deterministic algorithms on cuda need it: set it before any
# test touches the GPU (it only fixes cuBLAS's workspace size).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Each device in DEVICES; a test that takes it is marked `gpu` (`pytest -m gpu` runs them)."""
    return torch.device(request.param)


@pytest.fixture
def deterministic(device):
    """On cuda, torch's deterministic algorithms for the test (cuDNN and atomics-based kernels may
    otherwise round differently between two runs in one process); the CPU's kernels already are."""
    if device.type != "cuda":
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
