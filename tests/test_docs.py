"""The plugin-author guide documents every hook, and its example trick works as written."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ganbench import hookspecs
from ganbench.rundir import read_jsonl
from ganbench.settings import CORE_KEYS
from ganbench.suite import load_suite
from ganbench.trainer import execute

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "writing-plugins.md").read_text()
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("ganbench_"))


def test_every_hook_is_documented_in_the_guide():
    documented = set(re.findall(r"^- `(ganbench_\w+)\(", GUIDE, flags=re.M))
    assert documented == set(HOOKS)


def test_every_hook_has_a_docstring():
    for name in HOOKS:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), name


def test_every_core_setting_is_documented():
    suites_doc = (ROOT / "docs" / "suites.md").read_text()
    for key in CORE_KEYS:
        assert f"`{key}`" in suites_doc, key


def test_the_guides_example_trick_runs(tiny_suite, tmp_path):
    code = re.search(r"save this as\s+`lr_decay.py`.*?```python\n(.*?)```", GUIDE, flags=re.S | re.I).group(1)
    (tmp_path / "lr_decay.py").write_text(code)
    path = tiny_suite('steps = 8\nlog_every = 2\ntricks = [{ name = "lr-decay", start = 0.5 }]')
    path.write_text(path.read_text().replace("seeds = [0]", 'seeds = [0]\nplugins = ["./lr_decay.py"]'))
    spec = load_suite(path).runs("default")[0]
    assert execute(spec, tmp_path / "run", torch.device("cpu")) == "completed"
    lrs = [r["lr_g"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert lrs[:2] == [2e-4, 2e-4] and lrs[2] < 2e-4 and lrs[-1] == 0.0
