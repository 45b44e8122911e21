"""Shared helpers: tiny suites written to a temporary folder."""
from __future__ import annotations

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
