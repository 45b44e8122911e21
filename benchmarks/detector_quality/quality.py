"""Detector quality on labelled runs (issue 4): precision and recall of the built-in detectors.

    python benchmarks/detector_quality/quality.py [OUT]
    python benchmarks/detector_quality/quality.py --quick [OUT]

trains the runs of mnist.toml and ring8.toml (about 5 minutes on a 2-core CPU), reads their
incidents.jsonl and prints, for each run, what was expected and what was flagged, then precision
and recall. Only incidents of warning severity or worse count as flags. OUT defaults to
reports/detector-quality. `--quick` trains the suites' `quick` scale instead (10 steps: every part
runs, but no fault has time to show, so its precision and recall say nothing) into a temporary
folder unless OUT is given; CI runs it.

A flag is a true positive when its kind is one the run was engineered to show (`EXPECTED`) and
it came within that run's window; a flag of a kind listed in `CONSEQUENCES` is a real
consequence of the engineered fault (a frozen G also lets D win) and is neither credited nor
counted against; anything else is a false positive. Recall counts expected kinds found in time.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
SUITES = ("mnist.toml", "ring8.toml")
SEVERE = ("warning", "critical")


@dataclass(frozen=True)
class Label:
    expected: dict[str, int]  # kind -> the last step by which it must be flagged
    consequences: frozenset[str] = frozenset()
    status: str | None = None  # the status the run must end with, if not "completed"


EXPECTED = {
    "healthy": Label({}),
    "d-dominates": Label({"d-dominance": 100}, frozenset({"mode-collapse"})),
    "nan-at-120": Label({"divergence": 120}, status="diverged"),
    "frozen-generator": Label({"mode-collapse": 50}, frozenset({"d-dominance", "vanishing-gradients"})),
    "healthy-wgan-gp": Label({}),
    "vanilla-collapse": Label({"mode-collapse": 2000}),
}


def train(out: Path, scale: str = "default") -> None:
    from ganbench.cli import main

    for suite in SUITES:
        code = main(["run", str(HERE / suite), "--scale", scale, "--out", str(out / Path(suite).stem), "--jobs", "0"])
        if code not in (0, 1):
            raise SystemExit(f"{suite}: ganbench run exited {code}")


def score(out: Path) -> dict:
    """Per-run findings and the totals, from the run directories under `out`."""
    runs, tp, fp, fn = [], 0, 0, 0
    for status_file in sorted(out.glob("*/runs/*/status.json")):
        run_dir = status_file.parent
        config = json.loads((run_dir / "config.json").read_text())["config"]
        label = EXPECTED[config]
        status = json.loads(status_file.read_text())["status"]
        incidents = [json.loads(line) for line in (run_dir / "incidents.jsonl").read_text().splitlines()
                     if line.strip()] if (run_dir / "incidents.jsonl").exists() else []
        flags = [i for i in incidents if i["severity"] in SEVERE]
        found = {kind: min((i["step"] for i in flags if i["kind"] == kind), default=None) for kind in label.expected}
        in_time = {kind for kind, step in found.items() if step is not None and step <= label.expected[kind]}
        false = [i for i in flags if i["kind"] not in label.expected and i["kind"] not in label.consequences]
        late = [i for i in flags if i["kind"] in label.expected and i["kind"] not in in_time]
        tp += len(in_time)
        fn += len(label.expected) - len(in_time)
        fp += len(false) + len(late)
        runs.append({"config": config, "status": status, "expected": label.expected,
                     "flagged": [(i["step"], i["kind"], i["severity"]) for i in flags],
                     "caught": sorted(in_time), "false": [(i["step"], i["kind"]) for i in false + late],
                     "status_ok": status == (label.status or "completed")})
    return {"runs": runs, "tp": tp, "fp": fp, "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / (tp + fn) if tp + fn else 1.0}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path,
                        help="the suites' output folder (default reports/detector-quality; with --quick a temporary one)")
    parser.add_argument("--quick", action="store_true", help="the suites' quick scale: every part, at 10 steps")
    args = parser.parse_args(argv)
    from ganbench.bench import conditions, load_average, ratio_line

    print(conditions("cpu") + ("; quick scale" if args.quick else "; default scale"))
    with tempfile.TemporaryDirectory(prefix="ganbench-detector-quality-") as tmp:
        out = args.out or (Path(tmp) if args.quick else Path("reports/detector-quality"))
        train(out, "quick" if args.quick else "default")
        result = score(out)
    for r in result["runs"]:
        print(f"{r['config']:<18} status {r['status']:<10} expected {r['expected'] or '{}'}  "
              f"caught {r['caught']}  flags {r['flagged']}  false {r['false']}")
    print(f"at the end: {load_average()}")
    print(ratio_line("precision", result["precision"], f"{result['tp']} true, {result['fp']} false flags"))
    print(ratio_line("recall", result["recall"], f"{result['tp']} of {result['tp'] + result['fn']} expected kinds in time"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
