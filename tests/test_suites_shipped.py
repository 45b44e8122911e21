"""Every suite shipped in suites/ validates at every scale, says what it asks and what the literature
expects, and keeps its smoke scale small enough for a CPU."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ganbench.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
SUITES = sorted((ROOT / "suites").glob("*.toml"))


def test_the_issue_6_suites_are_shipped():
    names = {p.name for p in SUITES}
    assert {"mode-collapse.toml", "mode-collapse-grid25.toml", "mode-collapse-stacked.toml", "losses.toml",
            "dcgan-practices.toml", "conditional.toml", "stability.toml"} <= names


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.stem)
def test_shipped_suite_validates(path):
    suite = load_suite(path)  # parses and validates every config at every scale
    assert suite.header.question.strip() and suite.header.expects.strip()
    assert len(suite.header.seeds) >= 3  # a ranking over fewer seeds cannot show seed variance
    smoke = suite.runs("smoke")
    assert smoke and all(spec.settings.steps <= 1000 for spec in smoke)
    names = [c.name for c in suite.configs]
    assert suite.baseline in names
    docs = (ROOT / "docs" / "suites.md").read_text()
    assert f"`suites/{path.name}`" in docs  # each shipped suite is listed in the guide


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.stem)
def test_shipped_suite_says_how_long_it_takes(path):
    # Each header gives the measured smoke time on a CPU and the estimated default time on a GPU,
    # and the guide's table lists the suite with the same smoke time.
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    match = re.search(r"# Time: smoke ([0-9][^(;,]*?) \(", header)
    assert match, f"{path.name}: no '# Time: smoke ... (' line"
    assert re.search(r"one GPU", header), f"{path.name}: no default-scale GPU estimate in the header"
    row = next(line for line in (ROOT / "docs" / "suites.md").read_text().splitlines()
               if line.startswith(f"| `{path.stem}`"))
    assert match.group(1) in row
