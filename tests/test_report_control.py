"""Report control (issue 14, item 5): the suite's `primary` chooses the ranking metric, every metric
with a better direction gets a column and a curve, and `plot` (the suite's, or a plugin class's)
adds train-record keys to the diagnostics figure. Run folders are written by hand, as the trainer
writes them; nothing here trains."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ganbench import UsageError
from ganbench.report import build_report
from ganbench.report.figures import colours, diagnostics
from ganbench.report.load import load
from ganbench.report.ranking import rank
from ganbench.report.stats import mean_std
from ganbench.report.verdict import verdicts
from ganbench.suite import load_suite

# (fid, sharpness) at the last eval point of each seed: "a" wins on FID, "b" on the plugin's sharpness.
FINALS = {"a": [(10.0, 0.2), (11.0, 0.25)], "b": [(20.0, 0.8), (21.0, 0.85)]}


def write_run(root: Path, config: str, seed: int, fid: float, sharpness: float, plot: dict | None = None) -> str:
    """A completed 20-step run: train records with d_loss and a trick's lecam_reg, two eval points with
    the built-in fid and a plugin metric's sharpness (better: max, as its status.json says)."""
    run_id = f"{config}-s{seed}-{seed:010x}"
    run = root / "runs" / run_id
    run.mkdir(parents=True)
    config_json = {"run_id": run_id, "config": config, "seed": seed, "data": {"kind": "image"}, "settings": {"steps": 20}}
    if plot is not None:
        config_json["plot"] = plot
    (run / "config.json").write_text(json.dumps(config_json))
    lines = [{"kind": "train", "step": s, "d_loss": 1.0, "g_loss": 0.7, "lecam_reg": 0.01 * s, "ema_gap": 0.5}
             for s in (5, 10, 15, 20)]
    prov = {"fid": {"extractor": "x"}, "sharp": {"rule": "laplacian"}}
    lines += [{"kind": "eval", "step": 10, "fid": fid + 5, "sharpness": sharpness / 2, "provenance": prov},
              {"kind": "eval", "step": 20, "fid": fid, "sharpness": sharpness, "provenance": prov}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (run / "status.json").write_text(json.dumps({
        "status": "completed", "metrics": {"final": {"fid": fid, "sharpness": sharpness}, "best": {},
                                           "better": {"fid": "min", "sharpness": "max"}}}))
    return run_id


def suite_dir(root: Path, **suite: object) -> Path:
    ids = [write_run(root, c, s, fid, sharp, plot={"ema_gap": 'trick "ema-probe"'} if c == "b" else None)
           for c, finals in FINALS.items() for s, (fid, sharp) in enumerate(finals)]
    (root / "suite.json").write_text(json.dumps({"name": "control", "question": "q", "baseline": "a", "seeds": [0, 1],
                                                 "configs": list(FINALS), "scale": "default", "runs": ids, **suite}))
    return root


def test_primary_chooses_the_ranking(tmp_path):
    default = rank(load(suite_dir(tmp_path / "default")))
    assert default.metric == "fid" and [r.config for r in default.groups[0].rows] == ["a", "b"]
    chosen = rank(load(suite_dir(tmp_path / "chosen", primary="sharpness")))
    assert chosen.metric == "sharpness" and chosen.better == "max" and chosen.suppressed is None
    assert [r.config for r in chosen.groups[0].rows] == ["b", "a"]
    assert 'chosen by the suite, primary = "sharpness"' in chosen.why
    assert "fid" in chosen.others  # the built-in one is still a column, just not the rank


def test_unknown_primary_says_so_and_ranks_nothing(tmp_path):
    ranking = rank(load(suite_dir(tmp_path, primary="sharpnes")))
    assert ranking.metric is None and all(r.rank is None for r in ranking.rows)
    message = ranking.suppressed
    assert message is not None
    assert 'no run recorded "sharpnes"' in message and 'did you mean "sharpness"' in message
    assert "the runs recorded: fid, sharpness" in message
    lines = verdicts(ranking)
    assert lines[0] == f"NOT RANKED: {message}." and "not ranked on sharpnes" in lines[1]
    # The other metrics are still shown, over the runs that have them.
    row = ranking.rows_of("b")[0]
    assert row.others["sharpness"].n == 2 and row.others["fid"].n == 2


def test_a_primary_without_a_direction_is_not_ranked_silently(tmp_path):
    root = suite_dir(tmp_path, primary="sharpness")
    for status in root.glob("runs/*/status.json"):  # as if the metric declared no better direction
        data = json.loads(status.read_text())
        data["metrics"]["better"] = {"fid": "min"}
        status.write_text(json.dumps(data))
    ranking = rank(load(root))
    assert ranking.metric is None and ranking.suppressed is not None
    assert 'no run says whether a lower or a higher "sharpness" is better' in ranking.suppressed


def test_a_running_suite_knows_a_plugin_metrics_direction_from_its_records(tmp_path):
    # While runs train, status.json has no metrics summary yet; the trainer writes each metric's
    # directions into its provenance in every eval record, and the report reads them there.
    root = suite_dir(tmp_path, primary="sharpness")
    for run in root.glob("runs/*"):
        (run / "status.json").write_text(json.dumps({"status": "running", "step": 20}))
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for r in records:
            if r["kind"] == "eval":
                r["provenance"]["sharp"]["better"] = {"sharpness": "max"}
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    ranking = rank(load(root))
    assert ranking.metric == "sharpness" and ranking.better == "max"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = suite_dir(tmp_path_factory.mktemp("control"), plot=["lecam_reg", "never_logged"])
    return build_report(root, warn=None)


def test_a_plugin_metric_gets_a_column_and_a_curve(report):
    assert report.ranking.metric == "fid" and report.ranking.others == ["sharpness"]
    md = (report.out / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| # |"))
    assert header.index("final FID") < header.index("sharpness (higher is better)")
    b = report.ranking.rows_of("b")[0].others["sharpness"]
    assert b.n == 2 and b.mean == pytest.approx(0.825)  # the final values of b's two seeds
    row_b = next(line for line in md.splitlines() if line.startswith("| 2 | b |"))
    assert f"| {mean_std(b)} |" in row_b
    assert (report.out / "figures" / "metric-sharpness.png").is_file()
    assert "figures/metric-sharpness.png" in md
    html = (report.out / "report.html").read_text()
    assert "sharpness<br><span class=\"ci\">final, higher is better</span>" in html


def test_plot_keys_join_the_diagnostics_figure(report):
    figure = diagnostics(report.results, colours(report.results.configs))
    assert figure is not None and {"lecam_reg", "ema_gap"} <= set(figure.keys)
    assert "never_logged" not in figure.keys
    assert report.results.plot == {"lecam_reg": "the suite's plot", "never_logged": "the suite's plot",
                                   "ema_gap": 'trick "ema-probe"'}
    assert (report.out / "figures" / "diagnostics.png").is_file()
    md = (report.out / "report.md").read_text()
    assert "lecam\\_reg (the suite's plot)" in md  # the caption says who asked for the panel
    assert "not recorded by any run, so not drawn: never\\_logged (the suite's plot)" in md
    assert "never_logged (the suite&#39;s plot)" in (report.out / "report.html").read_text()


# --- the suite side: what is validated at load, and what suite.json and config.json carry -------------

def with_header(path: Path, lines: str) -> Path:
    """The suite at `path` with `lines` added to its [suite] table."""
    path.write_text(path.read_text().replace("seeds = [0]", "seeds = [0]\n" + lines, 1))
    return path


@pytest.mark.parametrize("lines, expected", [
    ("primary = 3", ["suite.primary = 3", "string"]),
    ('primary = ""', ['suite.primary = ""', "expected a metric key"]),
    ('primary = " fid"', ['suite.primary = " fid"', "without spaces"]),
    ('plot = "lecam_reg"', ['suite.plot = "lecam_reg"', "list"]),
    ("plot = [1]", ["suite.plot = [1]", "string"]),
    ('plot = ["a", "a"]', ["suite.plot", '"a" is listed twice']),
    ('plot = [""]', ['suite.plot[0] = ""', "train-record key"]),
    ('primery = "fid"', ["suite.primery", 'did you mean "primary"']),
])
def test_bad_primary_or_plot_is_one_line(tiny_suite, lines, expected):
    with pytest.raises(UsageError) as info:
        load_suite(with_header(tiny_suite(), lines))
    message = str(info.value)
    assert "\n" not in message and str(Path("suite.toml")) in message
    for part in expected:
        assert part in message, message


def test_suite_json_carries_primary_and_plot(tiny_suite):
    suite = load_suite(with_header(tiny_suite(), 'primary = "class_fd"\nplot = ["lecam_reg"]'))
    assert suite.report_control() == {"primary": "class_fd", "plot": ["lecam_reg"]}
    assert load_suite(tiny_suite()).report_control() == {"primary": None, "plot": []}


TRICK = '''
import ganbench

class Probe:
    """Adds a key to every train record."""
    name = "probe"
    params = None
    plot = {plot}

    @ganbench.hookimpl
    def ganbench_log_record(self, record):
        record["probe_value"] = 1.0

@ganbench.hookimpl
def ganbench_register_tricks():
    return [Probe]
'''


def test_a_plugins_plot_attribute_goes_into_config_json_and_not_the_run_id(tiny_suite, tmp_path):
    (tmp_path / "probe.py").write_text(textwrap.dedent(TRICK.format(plot='("probe_value",)')))
    path = with_header(tiny_suite('tricks = ["probe"]'), 'plugins = ["./probe.py"]')
    spec = load_suite(path).runs("default")[0]
    assert spec.resolved()["plot"] == {"probe_value": 'trick "probe"'}
    assert "plot" not in spec.resolved(identity=True)
    (tmp_path / "probe.py").write_text(textwrap.dedent(TRICK.format(plot="()")))
    assert load_suite(path).runs("default")[0].run_id == spec.run_id  # declaring keys re-trains nothing


def test_a_plugins_plot_that_is_not_a_tuple_of_keys_is_refused(tiny_suite, tmp_path):
    (tmp_path / "probe.py").write_text(textwrap.dedent(TRICK.format(plot='"probe_value"')))
    path = with_header(tiny_suite('tricks = ["probe"]'), 'plugins = ["./probe.py"]')
    with pytest.raises(UsageError, match=r'configs\[0\]: trick "probe" \(Probe\): plot = .probe_value.: expected a tuple'):
        load_suite(path)


def test_the_trainer_records_each_metrics_directions_in_its_eval_records(one_thread):
    import ganbench.testing as gt
    import ganbench_plugins.metrics.prdc as prdc

    result = gt.run_plugin(prdc, steps=2)
    assert result.evals and all(r["provenance"]["prdc"]["better"] == prdc.BETTER for r in result.evals)


def test_recorded_directions_never_split_runs_into_groups():
    # Runs recorded before eval records carried `better` rank with runs recorded after, also when a
    # record's provenance is flattened to "<plugin>.<key>" because two metrics share the record.
    from ganbench.fid import comparable

    old = {"classifier.samples": 1000, "fid.extractor": "x"}
    new = {**old, "classifier.better": {"class_fd": "min"}, "fid.better": {"fid": "min"}}
    assert comparable(old, new) == []
    assert comparable({"extractor": "x"}, {"extractor": "x", "better": {"fid": "min"}}) == []
    assert comparable(old, {**old, "fid.extractor": "y"}) == ["fid.extractor"]


def test_suite_json_names_the_suite_file_inside_its_git_checkout(tiny_suite, tmp_path):
    path = tiny_suite()
    assert load_suite(path).file_record() == {"suite_file": str(path.resolve()), "suite_file_in_repo": None}
    (tmp_path / ".git").write_text("gitdir: /elsewhere/.git/worktrees/x\n")  # a worktree's .git is a file
    nested = tmp_path / "suites" / "reproduce"
    nested.mkdir(parents=True)
    moved = path.rename(nested / "s.toml")
    assert load_suite(moved).file_record() == {"suite_file": str(moved.resolve()),
                                               "suite_file_in_repo": "suites/reproduce/s.toml"}


def test_the_report_shows_the_suite_file_as_its_repository_path(tmp_path):
    absolute = "/work/some-worktree/suites/reproduce/x.toml"
    html = (build_report(suite_dir(tmp_path / "in", suite_file=absolute, suite_file_in_repo="suites/reproduce/x.toml"),
                         warn=None).out / "report.html").read_text()
    assert "<code>suites/reproduce/x.toml</code> (in the git checkout it ran from)" in html and absolute not in html
    html = (build_report(suite_dir(tmp_path / "out", suite_file=absolute), warn=None).out / "report.html").read_text()
    assert f"<code>{absolute}</code>" in html  # an older suite.json, or a suite outside any checkout


def test_the_report_starts_at_the_first_run_not_at_the_last_invocation(tmp_path):
    """suite.json's "started" is rewritten by each `ganbench run` into a folder (a resume, a later --only); the
    header must give when the first run started, and name the last invocation separately."""
    root = suite_dir(tmp_path / "in", started="2026-12-07T19:52:52+00:00")
    starts = {"a-s0": "2026-12-07T16:14:54+00:00", "a-s1": "2026-12-07T14:43:31+00:00", "b-s0": "2026-12-07T18:00:26+00:00"}
    for run in (root / "runs").iterdir():
        status = json.loads((run / "status.json").read_text())
        prefix = run.name.rsplit("-", 1)[0]
        if prefix in starts:
            status["started"] = starts[prefix]
        (run / "status.json").write_text(json.dumps(status))
    out = build_report(root, warn=None).out
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert ("- **Started:** 2026-12-07T14:43:31+00:00 (the last `ganbench run` into this folder started "
            "2026-12-07T19:52:52+00:00)") in md
    assert "<dt>Started</dt><dd>2026-12-07T14:43:31+00:00 <span" in html
    # one invocation that started before its runs: no second time
    fresh = suite_dir(tmp_path / "fresh", started="2026-12-07T10:00:00+00:00")
    assert "- **Started:** 2026-12-07T10:00:00+00:00;" in (build_report(fresh, warn=None).out / "report.md").read_text()
