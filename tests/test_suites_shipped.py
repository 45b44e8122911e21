"""Every suite shipped in suites/ validates at every scale, says what it asks and what the literature
expects, and keeps its smoke scale small enough for a CPU."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ganbench.params import as_dict
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


# --- calibration of the default scale (suites/calibration/defaults.toml) --------------------------------

CALIBRATION = ROOT / "suites" / "calibration" / "defaults.toml"


def calibration() -> dict:
    import tomllib

    return tomllib.loads(CALIBRATION.read_text())


def test_every_shipped_suite_has_a_calibration_entry():
    assert sorted(calibration()) == sorted(p.stem for p in SUITES)
    assert {entry["status"] for entry in calibration().values()} <= {"calibrated", "not calibrated"}


def baseline_training(name: str) -> dict:
    """What the baseline of suite `name` trains with at the default scale: every resolved setting but
    the metrics (evaluation draws its own noise, so metrics never change training)."""
    suite = load_suite(ROOT / "suites" / f"{name}.toml")
    spec = next(s for s in suite.runs("default") if s.config == suite.baseline and s.seed == 0)
    settings = dict(spec.resolved(identity=True)["settings"])
    settings.pop("metrics")
    return settings


@pytest.mark.parametrize("name", [n for n, e in calibration().items() if "same_training_as" in e])
def test_a_suite_calibrated_through_another_trains_its_baseline_identically(name):
    entry = calibration()[name]
    other = entry["same_training_as"]
    assert "same_training_as" not in calibration()[other]  # one level: the other has runs of its own
    assert baseline_training(name) == baseline_training(other), (
        f"{name}: its baseline no longer trains as {other}'s; calibrate it with runs of its own")


def training_params(params) -> dict:
    """A plugin's params as the run id sees them (ganbench.params.as_dict), without those left unset:
    TOML has no null, and an unset parameter means its default."""
    return {k: v for k, v in as_dict(params, identity=True).items() if v is not None}


@pytest.mark.parametrize("name", [n for n, e in calibration().items() if e["status"] == "calibrated"])
def test_a_calibrated_default_scale_is_the_one_calibrated(name):
    entry = calibration()[name]
    if "same_training_as" in entry:  # its runs are the other suite's (checked above)
        entry = {**calibration()[entry["same_training_as"]], "why": entry["why"]}
    suite = load_suite(ROOT / "suites" / f"{name}.toml")
    spec = next(s for s in suite.runs("default") if s.config == suite.baseline)
    s = spec.settings
    actual = {"steps": s.core.steps, "batch_size": s.core.batch_size, "lr_g": s.optimizer_g.lr,
              "lr_d": s.optimizer_d.lr, "architecture": {"name": s.architecture.name, **training_params(s.architecture.params)},
              "loss": s.loss.name, "tricks": [{"name": t.name, **training_params(t.params)} for t in s.tricks]}
    assert actual == entry["settings"], f"{name}: the default scale changed since it was calibrated"
    target = entry["target"]
    finals = entry["finals"][target["key"]]
    assert len(finals) >= 3 and len(set(target) & {"at_least", "at_most"}) == 1
    # the worst seed meets the target: a floor (a high-quality fraction) or a ceiling (a distance)
    worst = min(finals) if "at_least" in target else max(finals)
    assert worst >= target["at_least"] if "at_least" in target else worst <= target["at_most"]
    header = "\n".join(line for line in (ROOT / "suites" / f"{name}.toml").read_text().splitlines()
                       if line.startswith("#"))
    assert "Calibrated" in header and str(worst) in header  # the header records the calibration runs


@pytest.mark.parametrize("name", [n for n, e in calibration().items() if e["status"] != "calibrated"])
def test_an_uncalibrated_suite_says_so_in_its_header(name):
    header = (ROOT / "suites" / f"{name}.toml").read_text().split("\n[", 1)[0]
    assert "Not calibrated" in header and calibration()[name]["why"]


# --- reproduction suites (suites/reproduce/) -----------------------------------------------------

REPRODUCTIONS = sorted((ROOT / "suites" / "reproduce").glob("*.toml"))


def test_the_reproduction_suites_are_shipped():
    assert {p.stem for p in REPRODUCTIONS} >= {"unrolled-ring", "pacgan-ring", "pacgan-grid"}


@pytest.mark.parametrize("path", REPRODUCTIONS, ids=lambda p: p.stem)
def test_a_reproduction_suite_follows_one_paper_and_lists_its_differences(path):
    suite = load_suite(path)
    assert len(suite.header.seeds) >= 5  # issue 13: at least 5 seeds
    header = path.read_text().split("\n[suite]", 1)[0]
    assert "Protocol from the authors'" in header and "Differences from the reference" in header
    assert f"ganbench run suites/reproduce/{path.name} --scale default" in header
    assert all(spec.settings.steps <= 1000 for spec in suite.runs("smoke"))
    assert f"suites/reproduce/{path.name}" in (ROOT / "docs" / "reproductions.md").read_text()
