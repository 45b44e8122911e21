"""What the local executor's forkserver imports once, so that each run's process starts with it.

Measured on a busy 2-core CPU (benchmarks/executor_overhead.py), a run process importing these
itself spent about 10 s before its first step: torchvision (through env.json's versions, which
pulls in torch._dynamo), matplotlib's pyplot (the sample grids of point data), and every installed
plugin module (each run builds its own registry). Not an entry point: only the forkserver imports it.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

import matplotlib
import torch  # noqa: F401
import torchvision  # noqa: F401
import torchvision.utils  # noqa: F401

import ganbench.environment  # noqa: F401
import ganbench.registry
import ganbench.trainer  # noqa: F401

matplotlib.use("Agg")  # what ganbench.samples uses too: the run processes draw to files only
import matplotlib.pyplot  # noqa: E402,F401

for _name in sorted({ep.module for ep in entry_points(group=ganbench.registry.ENTRY_POINT_GROUP)}):
    try:
        importlib.import_module(_name)
    except Exception:  # a broken plugin is reported by the run that loads it, with its traceback
        pass
