"""The report from hand-written run folders (test doubles: `fake_run_dir`, `fake_suite_dir`).

Real runs are in test_report_browser.py; here each case writes exactly the files it needs.
"""
from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats as sps

from ganbench import UsageError
from ganbench.cli import main
from ganbench.report import build_report
from ganbench.report.load import load
from ganbench.report.ranking import rank
from ganbench.report.render import md_escape
from ganbench.report.verdict import verdicts as verdict_lines

FID_PROVENANCE = {"extractor": "inception-v3-compat", "weights_sha256": "abc", "real_samples": 500,
                  "generated_samples": 128, "weights_origin": "here", "device": "cpu"}


def png_bytes(colour: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), (colour, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def fake_run_dir(root: Path, config: str, seed: int, *, status: str | None = "completed", fid: list[float] = (),
                 steps: int = 100, provenance: dict | None = None, incidents: list[dict] = (),
                 train_extra: dict | None = None, metric: str = "fid", reason: str | None = None,
                 reached: int | None = None) -> str:
    """A run folder as the trainer writes it: `fid` holds the value at each eval point, evenly spaced up
    to step `reached` (default: the last of `steps`)."""
    run_id = f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', config).strip('-') or 'config'}-s{seed}-{seed:010x}"
    run = root / "runs" / run_id
    (run / "samples").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"run_id": run_id, "config": config, "seed": seed,
                                                 "data": {"kind": "image"}, "settings": {"steps": steps}}))
    (run / "env.json").write_text(json.dumps({"ganbench": "0.1.0", "torch": "2.14.1", "device": "cpu"}))
    lines = []
    reached = steps if reached is None else reached
    for step in range(10, reached + 1, 10):
        lines.append({"kind": "train", "step": step, "images_seen": step * 8, "d_loss": 1.0 + seed / 10,
                      "g_loss": 0.7, "d_real": 0.5, "d_fake": -0.5, "sec_per_step": 0.02, **(train_extra or {})})
    eval_steps = [reached * (i + 1) // len(fid) for i in range(len(fid))]
    for i, (value, step) in enumerate(zip(fid, eval_steps)):
        (run / "samples" / f"step-{step:07d}.png").write_bytes(png_bytes(40 * i))
        lines.append({"kind": "eval", "step": step, "images_seen": step * 8, "sample_grid": f"samples/step-{step:07d}.png",
                      metric: value, **({"kid_mean": value / 1000} if metric == "fid" else {}),
                      "provenance": {"fid" if metric == "fid" else "classifier": provenance or FID_PROVENANCE}})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if incidents:
        (run / "incidents.jsonl").write_text("".join(json.dumps(i) + "\n" for i in incidents))
    if status is not None:
        finals = {metric: fid[-1]} if fid else {}
        (run / "status.json").write_text(json.dumps({
            "status": status, "reason": reason, "started": "2026-01-01T00:00:00+00:00",
            "finished": "2026-01-01T00:10:00+00:00", "wall_s": 600.0,
            "metrics": {"final": finals, "best": {metric: {"value": min(fid), "step": eval_steps[int(np.argmin(fid))]}}
                        if fid else {}, "better": {metric: "min"}}}))
    return run_id


def fake_suite_dir(root: Path, run_ids: list[str], *, name: str = "fake", question: str = "Which is best?",
                   baseline: str = "vanilla", configs: list[str] | None = None, scale: str = "default") -> Path:
    (root / "suite.json").write_text(json.dumps({
        "name": name, "question": question, "expects": "Spectral norm helps (Miyato et al. 2018).",
        "baseline": baseline, "seeds": [0, 1, 2], "configs": configs or ["vanilla", "spectral-norm", "wgan"],
        "scale": scale, "scale_reason": "--scale given", "device": "cpu", "device_name": "cpu (test)",
        "started": "2026-01-01T00:00:00+00:00", "runs": run_ids}))
    return root


VANILLA = [[40.0, 30.0, 20.0], [41.0, 31.0, 22.0], [39.0, 33.0, 21.0]]
SPECTRAL = [[30.0, 15.0, 12.0], [31.0, 16.0, 12.5], [29.0, 15.5, 11.5]]


@pytest.fixture(scope="module")
def three_configs(tmp_path_factory) -> Path:
    """vanilla and spectral-norm over 3 seeds; wgan with one diverged seed and one missing run."""
    root = tmp_path_factory.mktemp("suite")
    ids = [fake_run_dir(root, "vanilla", s, fid=VANILLA[s]) for s in range(3)]
    ids += [fake_run_dir(root, "spectral-norm", s, fid=SPECTRAL[s], train_extra={"grad_norm_d": 2.0, "grad_norm_g": 0.5},
                         incidents=[{"step": 50, "kind": "d-dominance", "severity": "warning", "detector": "d-dominance",
                                     "policy": "record", "message": "D wins", "evidence": {"d_acc": 0.99}}] if s == 1 else ())
            for s in range(3)]
    ids.append(fake_run_dir(root, "wgan", 0, fid=[50.0, 45.0, 44.0]))
    ids.append(fake_run_dir(root, "wgan", 1, fid=[60.0], status="diverged", reason="non-finite d_loss at step 40",
                            reached=40))
    ids.append("wgan-s2-0000000002")  # listed in suite.json, never started
    fake_suite_dir(root, ids)
    build_report(root)
    return root


def test_ranking_sorts_by_final_fid_and_tests_against_the_baseline(three_configs):
    ranking = rank(load(three_configs))
    assert ranking.metric == "fid" and ranking.baseline == "vanilla"
    rows = {r.config: r for r in ranking.rows}
    assert [r.config for r in ranking.groups[0].rows] == ["spectral-norm", "vanilla", "wgan"]
    finals_v, finals_s = [f[-1] for f in VANILLA], [f[-1] for f in SPECTRAL]
    assert rows["vanilla"].final.mean == pytest.approx(np.mean(finals_v))
    assert rows["vanilla"].best.mean == pytest.approx(np.mean([min(f) for f in VANILLA]))
    expected = sps.ttest_ind(finals_s, finals_v, equal_var=False).pvalue
    assert rows["spectral-norm"].vs_baseline.p == pytest.approx(expected)
    # wgan: one scored seed, one diverged (not averaged in), one missing.
    assert rows["wgan"].final.n == 1 and rows["wgan"].final.mean == 44.0
    assert rows["wgan"].failures == 1 and rows["wgan"].planned == 3
    assert rows["wgan"].vs_baseline.why == "n/a (1 seed)"
    assert rows["spectral-norm"].incidents == 1 and rows["spectral-norm"].worst_incident == "warning"


def test_verdicts_come_from_the_numbers(three_configs):
    verdicts = "\n".join(verdict_lines(rank(load(three_configs))))
    assert "spectral-norm: final FID 12.00 ± 0.50 over 3 seeds (best 12.00)" not in verdicts  # best == final
    assert "spectral-norm: final FID 12.00 ± 0.50 over 3 seeds, 0/3 failed, diverged or collapsed" in verdicts
    p = sps.ttest_ind([12.0, 12.5, 11.5], [20.0, 22.0, 21.0], equal_var=False).pvalue
    assert p < 0.001 and "better than vanilla (Welch p < 0.001)" in verdicts
    assert "vanilla: final FID 21.0 ± 1.0 over 3 seeds" in verdicts and "the baseline" in verdicts
    assert "wgan: final FID 44.0 over 1 seed" in verdicts
    assert "1/3 diverged (1 missing)" in verdicts and "not tested against vanilla: n/a (1 seed)" in verdicts
    assert "1 incident (worst: warning)" in verdicts
    md = (three_configs / "report.md").read_text()
    assert "better than vanilla (Welch p &lt; 0.001)" in md  # "<" is escaped in Markdown too


def test_worse_and_no_significant_difference(tmp_path):
    ids = [fake_run_dir(tmp_path, "vanilla", s, fid=[10.0 + s]) for s in range(3)]
    ids += [fake_run_dir(tmp_path, "wgan", s, fid=[30.0 + s]) for s in range(3)]
    ids += [fake_run_dir(tmp_path, "spectral-norm", s, fid=[10.5 + 2 * s]) for s in range(3)]
    fake_suite_dir(tmp_path, ids)
    text = build_report(tmp_path).markdown.read_text()
    assert "wgan: final FID 31.0 ± 1.0 over 3 seeds, 0/3 failed, diverged or collapsed; worse than vanilla" in text
    assert "no significant difference from vanilla" in text


def test_html_is_one_self_contained_file(three_configs):
    html = (three_configs / "report.html").read_text()
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html)
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) >= 4 + 2 * 3  # figures, and a final grid per seed that has one
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    for section in ('id="ranking"', 'id="incidents"', "d-dominance", "D wins", "d_acc = 0.990", "missing",
                    "1 run(s) have not finished"):
        assert section in html, section


def test_markdown_links_figures_that_exist(three_configs):
    md = (three_configs / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert any(link.startswith("figures/metric-fid") for link in links)
    assert any(link.startswith("figures/grad-norms") for link in links)  # the runs recorded grad_norm_d
    for link in links:
        assert (three_configs / link).is_file(), link
    header = next(line for line in md.splitlines() if line.startswith("| # |"))
    assert "Welch's t-test, two-sided" in header


def test_results_tables(three_configs):
    csv = pd.read_csv(three_configs / "results.csv")
    parquet = pd.read_parquet(three_configs / "results.parquet")
    assert len(csv) == len(parquet) == 9
    assert list(csv["status"]).count("missing") == 1 and list(csv["status"]).count("diverged") == 1
    vanilla = csv[csv["config"] == "vanilla"].sort_values("seed")
    assert list(vanilla["final_fid"]) == [f[-1] for f in VANILLA]
    assert list(vanilla["best_fid"]) == [min(f) for f in VANILLA]
    assert set(parquet["provenance_group"]) == {0, -1}


def test_no_gradient_norms_no_gradient_figure(tmp_path):
    ids = [fake_run_dir(tmp_path, "vanilla", s, fid=[10.0 + s]) for s in range(2)]
    report = build_report(fake_suite_dir(tmp_path, ids, configs=["vanilla"]))
    assert not (tmp_path / "figures" / "grad-norms.png").exists()
    assert (tmp_path / "figures" / "losses.png").is_file() and report.ranking.metric == "fid"


def test_values_measured_differently_are_not_ranked_together(tmp_path):
    other = {**FID_PROVENANCE, "real_samples": 10000, "weights_origin": "elsewhere"}
    ids = [fake_run_dir(tmp_path, "vanilla", s, fid=[20.0 + s]) for s in range(2)]
    ids += [fake_run_dir(tmp_path, "spectral-norm", s, fid=[5.0 + s], provenance=other) for s in range(2)]
    ids += [fake_run_dir(tmp_path, "wgan", s, fid=[30.0 + s], provenance={**FID_PROVENANCE, "device": "cuda"})
            for s in range(2)]  # the device does not change the number (fid.NOT_COMPARED)
    report = build_report(fake_suite_dir(tmp_path, ids))
    groups = report.ranking.groups
    assert [[r.config for r in g.rows] for g in groups] == [["vanilla", "wgan"], ["spectral-norm"]]
    assert groups[1].differs == {"real_samples": 10000}
    assert groups[1].rows[0].vs_baseline.why == "n/a (baseline not measured this way)"
    html = report.html.read_text()
    assert "Group 2: measured differently from group 1" in html and "ranked in separate tables" in html


def test_no_fid_falls_back_to_class_fd_and_says_so(tmp_path):
    ids = [fake_run_dir(tmp_path, "vanilla", s, fid=[300.0 + s], metric="class_fd", provenance={"classifier": "cnn"})
           for s in range(2)]
    report = build_report(fake_suite_dir(tmp_path, ids, configs=["vanilla"]))
    assert report.ranking.metric == "class_fd"
    assert "Ranking by final class FD" in report.html.read_text()
    assert "no run recorded FID" in report.markdown.read_text()


def test_a_suite_with_nothing_finished_still_reports(tmp_path):
    ids = [fake_run_dir(tmp_path, "vanilla", 0, fid=[], status="running"), "vanilla-s1-0000000001"]
    report = build_report(fake_suite_dir(tmp_path, ids, configs=["vanilla"], scale="smoke"))
    html = report.html.read_text()
    assert "SMOKE SCALE" in html and "indicative only" in html
    assert "2 run(s) have not finished" in html
    assert "no final" in report.markdown.read_text()
    # A half-written last line (a run still writing) is skipped and noted, not fatal.
    with open(tmp_path / "runs" / ids[0] / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "st')
    assert "not complete JSON" in build_report(tmp_path).html.read_text()


def test_names_and_messages_are_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    config = 'a|b [x](http://e.com) <img src=x onerror="alert(2)">'
    ids = [fake_run_dir(tmp_path, config, s, fid=[10.0 + s],
                        incidents=[{"step": 10, "kind": evil, "severity": "critical", "detector": evil, "policy": "stop",
                                    "message": evil, "evidence": {evil: 1.0}}]) for s in range(2)]
    report = build_report(fake_suite_dir(tmp_path, ids, name=evil, question=evil, baseline=config, configs=[config]))
    html = report.html.read_text()
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    md = report.markdown.read_text()
    assert "<script>" not in md and "<img src=x" not in md
    assert "# &lt;script&gt;alert(1)&lt;/script&gt;" in md
    row = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    assert "a\\|b \\[x\\](http://e.com)" in row
    assert md_escape("x|y\n*z*") == "x\\|y \\*z\\*"


def test_not_a_suite_folder_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(UsageError, match=r"suite\.json"):
        build_report(tmp_path)
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere: no such folder" in err[0] and "suite.json" in err[0]


def test_cli_report_writes_to_out(three_configs, tmp_path, capsys):
    assert main(["report", str(three_configs), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.html").is_file()
    assert str(tmp_path / "elsewhere" / "report.html") in capsys.readouterr().out
