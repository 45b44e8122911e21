"""The report survives any run folder: damaged files are listed and skipped, nothing is written
outside the report's folder, results.csv holds no formulas, and `--only` keeps the other configs.

Run folders are the hand-written test doubles of test_report.py (`fake_run_dir`, `fake_suite_dir`),
damaged one file at a time; the `--only` test trains a tiny real suite twice.
"""
from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from markupsafe import escape
from PIL import Image
from test_report import fake_run_dir, fake_suite_dir, png_bytes

from ganbench import UsageError
from ganbench.cli import main
from ganbench.report import build_report
from ganbench.report.build import csv_cell
from ganbench.report.damage import run_id_problem, safe_name
from ganbench.report.figures import Figure
from ganbench.report.load import DAMAGED, load
from ganbench.report.ranking import rank
from ganbench.report.render import md_escape
from ganbench.report.verdict import verdicts
from ganbench.report.view import figure_images


def healthy(root: Path) -> list[str]:
    return [fake_run_dir(root, "vanilla", s, fid=[20.0 + s, 10.0 + s]) for s in range(2)]


def with_broken_run(root: Path, **kwargs) -> tuple[list[str], str]:
    """Two healthy vanilla runs and one "broken" run, written whole: the caller damages it."""
    ids = healthy(root)
    bad = fake_run_dir(root, "broken", 0, fid=[30.0, 25.0], **kwargs)
    fake_suite_dir(root, ids + [bad], configs=["vanilla", "broken"])
    return ids, bad


def damage_of(results, run_id: str, file: str) -> str:
    found = [d.reason for d in results.damaged if d.run_id == run_id and d.file == file]
    assert len(found) == 1, results.damaged
    return found[0]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# ---- 1. files and fields of the wrong type ---------------------------------------------------------

STATUS_CASES = {
    "a list": ("[1, 2]", "holds a list, not an object"),
    "a string": ('"completed"', "holds a string, not an object"),
    "a number": ("5", "holds a number, not an object"),
    "not JSON": ('{"status": "compl', "is not valid JSON"),
    "status a number": ('{"status": 5}', '"status" is a number'),
}


@pytest.mark.parametrize("text, reason", STATUS_CASES.values(), ids=STATUS_CASES.keys())
def test_a_status_json_of_the_wrong_type_is_damaged(tmp_path, text, reason):
    ids, bad = with_broken_run(tmp_path)
    (tmp_path / "runs" / bad / "status.json").write_text(text)
    results = load(tmp_path)
    assert reason in damage_of(results, bad, "status.json")
    runs = results.runs.set_index("run_id")
    assert runs.loc[bad, "status"] == DAMAGED and list(runs.loc[ids, "status"]) == ["completed"] * 2
    rows = {r.config: r for r in rank(results).rows}
    # Not scored (its status is unknown), and not counted as a failure either.
    assert rows["broken"].scored == 0 and rows["broken"].failures == 0
    assert rows["vanilla"].final.n == 2


def test_status_fields_of_the_wrong_type_are_dropped_and_the_rest_kept(tmp_path):
    ids, bad = with_broken_run(tmp_path)
    path = tmp_path / "runs" / bad / "status.json"
    status = json.loads(path.read_text())
    path.write_text(json.dumps({**status, "finished": 5, "wall_s": "long", "metrics": "x", "incidents": {"count": "many"}}))
    results = load(tmp_path)
    reason = damage_of(results, bad, "status.json")
    assert '"metrics" is a string, expected an object' in reason and '"wall_s" is a string' in reason
    assert "and 1 more" in reason  # three problems shown, the fourth counted: still one line
    run = results.runs.set_index("run_id").loc[bad]
    assert run["status"] == "completed" and pd.isna(run["wall_s"])
    assert run["final_fid"] == 25.0 and run["best_fid"] == 25.0  # from the eval records instead


RECORD_CASES = {
    "a list": ('[1, 2]', "line 2: is a list, not an object; line skipped"),
    "not JSON in the middle": ("{oops}", "line 2 is not JSON; skipped"),
    "step a string": ('{"kind": "train", "step": "20", "d_loss": 1.0}', 'line 2: "step" is a string, expected an integer'),
    "no step": ('{"kind": "train", "d_loss": 1.0}', 'line 2: no "step"'),
    "kind a number": ('{"kind": 3, "step": 5}', 'line 2: "kind" is a number'),
    "a metric value a string": ('{"kind": "eval", "step": 5, "fid": "low"}', 'line 2: "fid" is a string, expected a number'),
    "a record naming another config": ('{"kind": "train", "step": 5, "config": 7}', 'line 2: "config" is not a record field'),
}


@pytest.mark.parametrize("line, reason", RECORD_CASES.values(), ids=RECORD_CASES.keys())
def test_a_metrics_line_of_the_wrong_type_is_damaged_and_skipped(tmp_path, line, reason):
    ids, bad = with_broken_run(tmp_path)
    path = tmp_path / "runs" / bad / "metrics.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], line, *lines[1:]]) + "\n")
    results = load(tmp_path)
    assert reason in damage_of(results, bad, "metrics.jsonl")
    assert set(results.train["config"]) == {"vanilla", "broken"}  # no record renames its run
    assert pd.api.types.is_integer_dtype(results.train["step"])
    assert not any(isinstance(v, str) for v in results.evals["fid"])  # "low" is not in the table


def test_a_cut_off_last_line_is_skipped_and_noted_not_damage(tmp_path):
    ids, bad = with_broken_run(tmp_path, status=None)  # still running: no status.json
    with open(tmp_path / "runs" / bad / "metrics.jsonl", "a") as f:
        f.write('{"kind": "eval", "step": 110, "fi')
    results = load(tmp_path)
    assert not results.damaged
    assert any(f"runs/{bad}/metrics.jsonl" in n and "not complete JSON" in n for n in results.notes)
    assert results.runs.set_index("run_id").loc[bad, "status"] == "running"
    assert results.evals["step"].max() == 100


INCIDENT_CASES = {
    "a string": ('"d wins"', "line 1: is a string, not an object; line skipped"),
    "not JSON": ("{", None),  # the only, unfinished line: being written
    "step a string": ('{"step": "x", "kind": "d-dominance"}', '"step" is a string'),
    "severity a number": ('{"step": 5, "kind": "d-dominance", "severity": 3}', '"severity" is a number'),
}


@pytest.mark.parametrize("text, reason", INCIDENT_CASES.values(), ids=INCIDENT_CASES.keys())
def test_an_incident_line_of_the_wrong_type_is_damaged(tmp_path, text, reason):
    ids, bad = with_broken_run(tmp_path)
    (tmp_path / "runs" / bad / "incidents.jsonl").write_text(text + ("\n" if reason else ""))
    results = load(tmp_path)
    if reason is None:
        assert not results.damaged and "not complete JSON" in results.notes[0]
    else:
        assert reason in damage_of(results, bad, "incidents.jsonl")
    assert set(results.incidents["severity"].dropna()) <= {"info", "warning", "critical"}


CONFIG_CASES = {
    "no config": ({"seed": 0}, 'no "config"'),
    "no seed": ({"config": "broken"}, 'no "seed"'),
    "seed a string": ({"config": "broken", "seed": "0"}, '"seed" is a string, expected an integer'),
    "config a list": ({"config": ["x"], "seed": 0}, '"config" is a list'),
    "settings a string": ({"config": "broken", "seed": 0, "settings": "fast"}, '"settings" is a string'),
    "a list": ([1], "holds a list, not an object"),
}


@pytest.mark.parametrize("config, reason", CONFIG_CASES.values(), ids=CONFIG_CASES.keys())
def test_a_config_json_of_the_wrong_type_is_damaged(tmp_path, config, reason):
    ids, bad = with_broken_run(tmp_path)
    (tmp_path / "runs" / bad / "config.json").write_text(json.dumps(config))
    results = load(tmp_path)
    assert reason in damage_of(results, bad, "config.json")
    run = results.runs.set_index("run_id").loc[bad]
    assert (run["config"], run["seed"]) == ("broken", 0)  # read from the run id instead


def test_suite_json_entries_of_the_wrong_type_are_damaged(tmp_path):
    ids = healthy(tmp_path)
    fake_suite_dir(tmp_path, ids + [5, "../../x", "/etc", ids[0]], configs=["vanilla"])
    suite = json.loads((tmp_path / "suite.json").read_text())
    (tmp_path / "suite.json").write_text(json.dumps({**suite, "seeds": 3, "baseline": ["vanilla"]}))
    results = load(tmp_path)
    reason = damage_of(results, None, "suite.json")
    assert '"seeds" is a number, expected a list' in reason and '"baseline" is a list' in reason
    assert "a run id in suite.json is a number" in reason and "and 2 more" in reason  # "../../x" and "/etc"
    assert list(results.runs["run_id"]) == ids  # the duplicate is read once
    assert results.suite["seeds"] == [] and results.baseline == "vanilla"


def test_an_interrupted_run_is_unfinished_not_a_failure(tmp_path):
    ids, bad = with_broken_run(tmp_path, status="interrupted", reason="interrupted by SIGINT after step 60")
    report = build_report(tmp_path, warn=None)
    row = next(r for r in report.ranking.rows if r.config == "broken")
    assert row.failures == 0 and row.unfinished == 1 and row.scored == 0
    assert "0/1 failed, diverged or collapsed (1 interrupted)" in "\n".join(verdicts(report.ranking))
    assert "1 run(s) have not finished" in report.html.read_text()


def test_a_file_that_cannot_be_read_is_damaged(tmp_path):
    ids, bad = with_broken_run(tmp_path)
    (tmp_path / "runs" / bad / "status.json").unlink()
    (tmp_path / "runs" / bad / "status.json").mkdir()
    (tmp_path / "runs" / bad / "env.json").write_text("[]")
    results = load(tmp_path)
    assert "cannot be read (IsADirectoryError)" in damage_of(results, bad, "status.json")
    assert "holds a list" in damage_of(results, bad, "env.json")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """Healthy vanilla and spectral-norm runs beside one run of "broken" per kind of damage."""
    root = tmp_path_factory.mktemp("zoo")
    ids = healthy(root) + [fake_run_dir(root, "spectral-norm", s, fid=[15.0 + s, 5.0 + s]) for s in range(2)]
    damage = {"status.json": "[1, 2]", "metrics.jsonl": '{"kind": "train", "step": "x"}\n',
              "incidents.jsonl": "7\n", "config.json": '{"config": "broken"}', "env.json": '"cpu"'}
    for seed, (file, text) in enumerate(damage.items()):
        run_id = fake_run_dir(root, "broken", seed, fid=[40.0, 35.0 + seed])
        (root / "runs" / run_id / file).write_text(text)
        ids.append(run_id)
    fake_suite_dir(root, ids + ["../../outside"], configs=["vanilla", "spectral-norm", "broken"])
    build_report(root, warn=None)
    return root


def test_the_report_lists_each_damaged_file_and_builds_the_rest(zoo):
    results = load(zoo)
    assert len(results.damaged) == 6  # one per damaged run, and suite.json's unsafe run id
    html, md = (zoo / "report.html").read_text(), (zoo / "report.md").read_text()
    assert 'id="damaged"' in html and "6 file(s) are damaged" in html and "## Damaged files" in md
    for d in results.damaged:
        assert f"<tr><td><code>{escape(d.where)}</code></td><td>{escape(d.reason)}</td></tr>" in html, d.where
        assert f"| {md_escape(d.where)} | {md_escape(d.reason)} |" in md.splitlines(), d.where
    ranked = {r.config: r for r in rank(results).groups[0].rows}
    assert ranked["spectral-norm"].rank == 1 and ranked["vanilla"].final.n == 2
    csv = pd.read_csv(zoo / "results.csv")
    assert len(csv) == 4 + 5 and "outside" not in " ".join(csv["run_id"])


def test_cli_report_warns_once_per_damaged_run(zoo, tmp_path, capsys):
    assert main(["report", str(zoo), "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 6 and all(line.startswith("ganbench: warning: ") for line in err)
    assert sum("suite.json is damaged" in line for line in err) == 1
    assert any("runs/broken-s0-0000000000 (status.json) is damaged: holds a list" in line for line in err)
    assert (tmp_path / "report.html").is_file()


# ---- 2. nothing outside the report's folder --------------------------------------------------------

def test_names_and_paths_in_the_files_never_leave_the_report_folder(tmp_path):
    root = tmp_path / "deep" / "er" / "suite"
    root.mkdir(parents=True)
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(201))  # a valid PNG outside: must never be embedded
    key = "../../../../evil"  # a metric key is data too, and names a figure
    ids = [fake_run_dir(root, "vanilla", s, fid=[20.0 + s, 10.0 + s], metric=key) for s in range(2)]
    evil = fake_run_dir(root, "evil", 0, fid=[30.0, 25.0], metric=key)
    run = root / "runs" / evil
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "config": "../../etc/x", "run_id": "../../../x"}))
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "eval", "step": 101, "sample_grid": "../../../../tmp/evil.png"}) + "\n")
    os.symlink(secret, run / "samples" / "step-0000200.png")
    # "../../../outside-run" from runs/ is tmp_path/deep/outside-run; its grid, copied beside the
    # Markdown under its run id, would land in tmp_path/deep/er/outside-run.
    outside = tmp_path / "deep" / "outside-run"
    (outside / "samples").mkdir(parents=True)
    (outside / "config.json").write_text(json.dumps({"config": "vanilla", "seed": 5}))
    (outside / "samples" / "step-0000002.png").write_bytes(png_bytes(202))
    fake_suite_dir(root, ids + [evil, "../../../outside-run", "/etc"], configs=["vanilla"])
    before = files_under(tmp_path)

    report = build_report(root, warn=None)
    written = files_under(tmp_path) - before
    assert written and all(p.is_relative_to(root) for p in written), sorted(written)
    assert all(safe_name(p.name) == p.name for p in written)
    html = report.html.read_text()
    for colour in (201, 202):
        assert base64.b64encode(png_bytes(colour)).decode() not in html
    results = report.results
    assert "leads outside the run folder" in damage_of(results, evil, "samples")
    assert '"sample_grid" is not a path inside the run folder' in damage_of(results, evil, "metrics.jsonl")
    assert report.ranking.metric == key and "seed 5" not in html
    assert (root / "figures" / "metric-evil.png").is_file()


def test_a_figures_folder_that_links_outside_is_refused(tmp_path):
    root, elsewhere = tmp_path / "suite", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    fake_suite_dir(root, healthy(root), configs=["vanilla"])
    os.symlink(elsewhere, root / "figures")
    with pytest.raises(UsageError, match="leads outside the report folder"):
        build_report(root, warn=None)
    assert not list(elsewhere.iterdir())


def test_a_sample_grid_that_is_not_a_png_is_not_shown(tmp_path):
    ids, bad = with_broken_run(tmp_path)
    (tmp_path / "runs" / bad / "samples" / "step-0000100.png").write_text("not a picture")
    report = build_report(tmp_path, warn=None)
    assert "step-0000100.png is not a PNG" in damage_of(report.results, bad, "samples")
    html = report.html.read_text()
    for src in html.split('<img src="data:image/png;base64,')[1:]:
        Image.open(io.BytesIO(base64.b64decode(src.split('"', 1)[0]))).verify()


def test_figure_names_are_safe_and_unique():
    drawn = [Figure(name, "t", "c", b"") for name in ("metric-a/b", "metric-a-b", "metric-a-b-2", "../../x")]
    paths = [image.path for image in figure_images(drawn)]
    assert paths == ["figures/metric-a-b.png", "figures/metric-a-b-2.png", "figures/metric-a-b-2-2.png",
                     "figures/x.png"]


@pytest.mark.parametrize("run_id", ["../x", "a/b", "/etc", ".", "..", "a b", "a\\b", "", "x\x00"])
def test_unsafe_run_ids_are_refused(run_id):
    assert run_id_problem(run_id) is not None
    assert run_id_problem("vanilla-s0-0123456789") is None and run_id_problem(".hidden-s1-abc") is None
    assert "/" not in safe_name(run_id) and safe_name(run_id) not in ("", ".", "..")


# ---- 3. results.csv holds no formulas ---------------------------------------------------------------

@pytest.mark.parametrize("text", ["=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_csv_cells_that_start_a_formula_get_an_apostrophe(text):
    assert csv_cell(text) == "'" + text
    assert csv_cell("a=1") == "a=1" and csv_cell(-1.5) == -1.5 and csv_cell(None) is None


def test_results_csv_escapes_text_and_keeps_numbers(tmp_path):
    formula = '=HYPERLINK("http://e.com","x")'
    ids = [fake_run_dir(tmp_path, formula, s, fid=[-1.5 - s], metric="score", reason="-drop table",
                        status="stopped") for s in range(2)]
    fake_suite_dir(tmp_path, ids, configs=[formula], baseline=formula)
    build_report(tmp_path, warn=None)
    csv = pd.read_csv(tmp_path / "results.csv")
    assert list(csv["config"]) == ["'" + formula] * 2 and list(csv["reason"]) == ["'-drop table"] * 2
    assert list(csv["final_score"]) == [-1.5, -2.5] and csv["final_score"].dtype == float
    parquet = pd.read_parquet(tmp_path / "results.parquet")
    assert list(parquet["config"]) == [formula] * 2 and list(parquet["reason"]) == ["-drop table"] * 2


# ---- 4. --only keeps the other configurations --------------------------------------------------------

TWO_CONFIGS = """
[suite]
name = "only"
question = "Does --only keep the others?"
seeds = [0]

[dataset]
name = "mnist5k"

[defaults]
architecture = { name = "dcgan", width = 8 }
batch_size = 8
steps = 2
log_every = 1
eval_every = 2
grid_size = 4
metrics = []

[[configs]]
name = "a"

[[configs]]
name = "b"
"""


@pytest.fixture(scope="module")
def only_twice(tmp_path_factory) -> tuple[Path, Path]:
    """`ganbench run --only b`, then `--only a`, into one folder (two 2-step runs)."""
    root = tmp_path_factory.mktemp("only")
    suite, out = root / "suite.toml", root / "out"
    suite.write_text(TWO_CONFIGS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for config in ("b", "a"):
            assert main(["run", str(suite), "--out", str(out), "--only", config, "--jobs", "0",
                         "--scale", "default"]) == 0
    finally:
        torch.set_num_threads(threads)
    return suite, out


def test_only_keeps_the_finished_runs_of_other_configs(only_twice):
    suite, out = only_twice
    listed = json.loads((out / "suite.json").read_text())
    assert listed["configs"] == ["a", "b"]  # suite order, not the order they ran in
    assert [r.split("-s0-")[0] for r in listed["runs"]] == ["a", "b"]
    csv = pd.read_csv(out / "results.csv")
    assert list(csv["config"]) == ["a", "b"] and set(csv["status"]) == {"completed"}
    assert "b: " in "\n".join(verdicts(rank(load(out))))


def test_only_lists_again_runs_an_earlier_suite_json_forgot(only_twice):
    suite, out = only_twice
    listed = json.loads((out / "suite.json").read_text())
    # As an older `--only a` left it: b's folder is there, suite.json does not list it.
    (out / "suite.json").write_text(json.dumps({**listed, "configs": ["a"], "runs": listed["runs"][:1]}))
    stale = out / "runs" / "b-s0-0000000000"  # a run the suite no longer plans (its settings changed)
    stale.mkdir()
    (stale / "status.json").write_text('{"status": "completed"}')
    assert main(["run", str(suite), "--out", str(out), "--only", "a", "--jobs", "0", "--scale", "default"]) == 0
    relisted = json.loads((out / "suite.json").read_text())
    assert relisted["runs"] == listed["runs"] and relisted["configs"] == ["a", "b"]
    assert load(out).unlisted == ["b-s0-0000000000"]
