"""The labelled detector-quality runs (benchmarks/detector_quality), trained for real: each
engineered failure is flagged with the right kind within its window, and the healthy runs get no
incident of warning severity or worse. About 4 minutes on a 2-core CPU."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

QUALITY = Path(__file__).parents[1] / "benchmarks" / "detector_quality" / "quality.py"


def load_quality():
    spec = importlib.util.spec_from_file_location("detector_quality", QUALITY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_every_engineered_failure_is_flagged_and_healthy_runs_are_quiet(tmp_path):
    quality = load_quality()
    quality.train(tmp_path)
    result = quality.score(tmp_path)
    runs = {(r["config"], i) for i, r in enumerate(result["runs"])}
    assert {config for config, _ in runs} == set(quality.EXPECTED)
    for r in result["runs"]:
        assert r["status_ok"], r
        assert set(r["caught"]) == set(r["expected"]), r  # the right kind, within its window
        assert r["false"] == [], r
        if not r["expected"]:
            assert r["flagged"] == [], r  # healthy: nothing of warning severity or worse
    assert result["precision"] == 1.0 and result["recall"] == 1.0
