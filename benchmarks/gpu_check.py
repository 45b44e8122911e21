"""The device check: everything ganbench needs to know about one GPU, in one command that fits
about 8 minutes on an H100/H200, written to a JSON and a Markdown summary (docs/gpu.md).

    python benchmarks/gpu_check.py                  # cuda: the full check, about 8 minutes
    python benchmarks/gpu_check.py --device cpu     # the same steps, scaled down (under 10 minutes on a 2-core CPU)
    python benchmarks/gpu_check.py --quick          # every step at its smallest (CI runs this)
    python benchmarks/gpu_check.py --only speed parity --out /tmp/check

Steps, each in its own process with its own timeout; a step that fails or times out is recorded
with its log's tail and the check goes on:
  env          the device, torch, CUDA, memory, and the CUDA context's own memory
  tests        `pytest -m gpu` on the device (GANBENCH_TEST_DEVICES): every built-in plugin's step,
               reproducibility, divergence, host-sync counting and the speed settings
  parity       a few identical steps (same weights, same batches) on the device and on the CPU,
               within PARITY_TOLERANCE
  determinism  two runs on the device under torch.use_deterministic_algorithms: bit-identical
  speed        steps/s of each speed setting (bf16, channels_last, compile) against eager fp32
  stability    suites/stability.toml, 2 configurations x 1 seed, at the default scale on cuda (FID on
               10,000 samples); wall time per phase and peak memory per run
  estimate     `ganbench estimate` of the same runs, against the measured times
  concurrency  `ganbench run --jobs N` on the one device: steps/s of N runs at once
  bench        `ganbench bench` (the trainer against a plain loop)
  fid          benchmarks/fid_throughput.py
Then: how many stability runs fit on the device at once, from the measured per-run memory.
The exit status is 0 when every step passed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

ORDER = ("env", "tests", "parity", "determinism", "speed", "stability", "estimate", "concurrency", "bench", "fid")
# Per size: each step's timeout in seconds and the whole check's budget. cuda's total is ~8 min;
# "cpu" is the same steps shrunk to fit 10 minutes on a loaded 2-core CPU; "quick" is CI's.
TIMEOUTS = {
    "cuda": {"env": 60, "tests": 150, "parity": 60, "determinism": 60, "speed": 150, "stability": 240,
             "estimate": 120, "concurrency": 120, "bench": 90, "fid": 120, "budget": 570},
    "cpu": {"env": 60, "tests": 180, "parity": 60, "determinism": 60, "speed": 150, "stability": 180,
            "estimate": 180, "concurrency": 90, "bench": 60, "fid": 120, "budget": 575},
    "quick": {"env": 60, "tests": 180, "parity": 60, "determinism": 60, "speed": 120, "stability": 180,
              "estimate": 120, "concurrency": 90, "bench": 60, "fid": 120, "budget": 570},
}
STEP_TIMEOUT_FLOOR = 20  # a step that would get less than this from the budget is skipped instead


# What each size runs. "cpu" and "quick" are the cuda check scaled down (SCALED_DOWN says how).
SIZES: dict[str, dict[str, Any]] = {
    "cuda": {"pytest": ["-m", "gpu"], "parity_steps": 3, "determinism_steps": 20,
             "speed": {"warmup": 20, "timed": 200, "repeats": 1, "settings": "cuda"},
             "stability": {"scale": "default", "jobs": 2}, "estimate_steps": 50,
             "concurrency": {"jobs": [1, 2, 4, 8], "warmup": 20, "timed": 200},
             "bench": ["--steps", "60", "--repeats", "3"],
             "fid": ["--images", "500", "--repeats", "3", "--batch-size", "250", "--eval-samples", "1000",
                     "--real-samples", "10000"]},
    "cpu": {"pytest": ["-m", "gpu and not slow", "-k", "dcgan-bce-gaussian or wgan-gp or spectral-norm or identical "
                       "or nan_loss or host_reads or speed"], "parity_steps": 3, "determinism_steps": 6,
            "speed": {"warmup": 5, "timed": 8, "repeats": 2, "settings": "cpu"},
            "stability": {"scale": "gpu-check", "jobs": 1, "metrics": '[{ name = "fid", batch_size = 16 }]',
                          "table": {"steps": 20, "log_every": 10, "eval_every": 20, "eval_samples": 32,
                                    "real_samples": 64}},
            "estimate_steps": 3, "bench": ["--steps", "10", "--repeats", "1"],
            "concurrency": {"jobs": [1, 2], "warmup": 3, "timed": 9},
            "fid": ["--images", "8", "--repeats", "1", "--batch-size", "8", "--skip", "cache"]},
    "quick": {"pytest": ["-m", "gpu and not slow", "-k", "identical_final_weights or nan_loss or resumes_bit"],
              "parity_steps": 2, "determinism_steps": 3,
              "speed": {"warmup": 2, "timed": 4, "repeats": 1, "settings": "quick"},
              "stability": {"scale": "gpu-check", "jobs": 1, "metrics": '["fid"]',
                            "table": {"steps": 10, "log_every": 5, "eval_every": 10, "eval_samples": 16,
                                      "real_samples": 32}},
              "estimate_steps": 3, "bench": ["--steps", "3", "--repeats", "1"],
              "concurrency": {"jobs": [1, 2], "warmup": 2, "timed": 4}, "fid": ["--quick", "--skip", "cache"]},
}
SCALED_DOWN = {
    "cpu": "tests of 3 plugins' steps, reproducibility, divergence, host reads and the speed settings, without "
           "the slow (compiled) one; one CPU thread per step process unless OMP_NUM_THREADS says otherwise; "
           "speed at 8 timed steps, best of 2 in alternating order, no reduce-overhead (CUDA graphs need a "
           "GPU); stability at 20 steps with FID alone (no classifier, Inception batch 16) on 32 samples instead "
           "of the default scale's 3,000 steps and 10,000; estimate profiles 3 steps; concurrency 1 and 2 runs at "
           "once; bench 10 steps; FID throughput on 8 images, without its cold/warm cache part",
    "quick": "every step at its smallest: a few tests, 4 timed steps per setting and no compile, "
             "stability at 10 steps with FID alone on 16 samples, FID throughput without its cache part",
}
STABILITY_CONFIGS = ("vanilla", "wgan-gp")  # the cheapest configuration and the costliest (5 critic steps, a penalty)
SPEED_SETTINGS = {  # label -> suite lines; fp32 eager first: every ratio is against it
    "fp32 eager": "",
    "bf16": 'precision = "bf16"',
    "channels_last": "channels_last = true",
    "bf16 + channels_last": 'precision = "bf16"\nchannels_last = true',
    "compile": "compile = true",
    "compile reduce-overhead": 'compile = "reduce-overhead"',
    "bf16 + channels_last + compile": 'precision = "bf16"\nchannels_last = true\ncompile = true',
}
SPEED_CHOICE = {  # each compile setting costs a compilation (tens of seconds cold): two on cuda
    "cuda": ["fp32 eager", "bf16", "channels_last", "bf16 + channels_last", "compile", "compile reduce-overhead"],
    "cpu": ["fp32 eager", "bf16", "channels_last", "bf16 + channels_last", "compile"],
    "quick": ["fp32 eager", "bf16", "channels_last"],
}
SPEED_SUITE = """
[suite]
name = "speed"
question = "How fast is the stability suite's vanilla step under each speed setting?"
[dataset]
name = "mnist5k"
[defaults]
architecture = {{ name = "dcgan", width = 32 }}
loss = "bce"
batch_size = 64
steps = {steps}
log_every = {log_every}
eval_every = 1000000
metrics = []
{extra}
[[configs]]
name = "vanilla"
"""
TINY_SUITE = """
[suite]
name = "tiny"
question = "Do two devices, or two runs, agree?"
[dataset]
name = "mnist5k"
[defaults]
architecture = { name = "dcgan", width = 16 }
batch_size = 32
steps = %d
log_every = %d
eval_every = 1000000
metrics = []
tricks = ["instance-noise", "noisy-labels"]
[[configs]]
name = "tiny"
"""
# cuda against the CPU, same weights and batches, TF32 off: float32 rounding only. Losses agree to
# LOSS_RTOL; Adam moves a weight by at most lr per step whatever its gradient, so a weight whose
# gradient is near 0 may move the other way on the other device: |dw| <= 2 lr steps bounds every
# weight, and all but WEIGHT_OUTLIERS of them agree to WEIGHT_ATOL.
PARITY_TOLERANCE = {"loss_rtol": 1e-4, "weight_atol": 1e-5, "weight_outliers": 0.01}
CUDA_CONTEXT_TYPICAL_MIB = 500  # a CUDA context's own memory, for a projection made without a GPU


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def torch_device(name: str) -> Any:
    import torch

    return torch.device(name)


def headline(name: str, result: dict[str, Any]) -> str:
    return str(result.get("headline", "")).replace("|", "/")


def subprocess_step(command: list[str], out: Path, name: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a command of a step, its output written to logs/<name>.out as it comes (a timed-out step
    keeps what it had printed); returns its exit status and output."""
    path = out / "logs" / f"{name}.out"
    print("$ " + " ".join(command), flush=True)
    with path.open("w") as sink:
        rc = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=sink,
                            stderr=subprocess.STDOUT).returncode
    text = path.read_text(errors="replace")
    print(text[-3000:])
    return rc, text


def step_env(device: Any, size: dict[str, Any], out: Path, result: dict[str, Any]) -> bool:
    import resource
    import platform

    import torch
    import torchvision

    import ganbench
    from ganbench.bench import conditions
    from ganbench.environment import device_name

    result.update({"device_name": device_name(device), "torch": torch.__version__, "torchvision": torchvision.__version__,
                   "cuda": torch.version.cuda, "ganbench": ganbench.__version__, "python": platform.python_version(),
                   "conditions": conditions(device), "cpu_count": os.cpu_count(),
                   # this process after importing torch, torchvision and ganbench: a run's baseline
                   "bare_import_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free_before, total = torch.cuda.mem_get_info(device)
        torch.zeros(1, device=device)
        free, total = torch.cuda.mem_get_info(device)
        result.update({"total_mib": round(total / 2**20), "capability": f"{props.major}.{props.minor}",
                       "bf16_supported": torch.cuda.is_bf16_supported(),
                       # what the device holds once this process has a context (other processes included)
                       "context_mib": round((total - free) / 2**20), "cudnn": torch.backends.cudnn.version()})
    result["headline"] = f"{result['device_name']}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return True


def step_tests(device: Any, size: dict[str, Any], out: Path, result: dict[str, Any]) -> bool:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *size["pytest"], "tests/"]
    rc, text = subprocess_step(command, out, "tests", {"GANBENCH_TEST_DEVICES": str(device)})
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", text)}
    result.update({"command": " ".join(command[1:]), "devices": str(device), "rc": rc, **counts,
                   "headline": ", ".join(f"{v} {k}" for k, v in counts.items()) or f"rc {rc}"})
    return rc == 0


def tiny_spec(steps_: int, out: Path, name: str) -> Any:
    from ganbench.suite import load_suite

    path = out / f"{name}-suite.toml"
    path.write_text(TINY_SUITE % (steps_, steps_))
    return load_suite(path).runs("default")[0]


def step_parity(device: Any, size: dict[str, Any], out: Path, result: dict[str, Any]) -> bool:
    """The same weights and batches through D and G updates on the CPU and on the device."""
    import torch

    from ganbench.state import Batch, Scores, Step, Targets
    from ganbench.trainer import build_run

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    spec = tiny_spec(size["parity_steps"], out, "parity")
    devices = [torch.device("cpu"), device]
    # The same initial weights on both: a run's models are built on the CPU, then moved.
    runs = [build_run(spec, out / "parity" / f"{i}-{d.type}", d) for i, d in enumerate(devices)]
    n, data_rng, z_rng = spec.settings.batch_size, torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    losses: list[list[tuple[float, float]]] = [[], []]
    for index in range(spec.settings.steps):
        real, _ = runs[0].data.sample(n, data_rng)  # drawn once, on the CPU, for both devices
        z = torch.randn(n, spec.settings.z_dim, generator=z_rng)
        for run, record in zip(runs, losses):
            G, D = run.models.generator, run.models.discriminator
            r, zz = real.to(run.device), z.to(run.device)
            ones, zeros = torch.ones(n, device=run.device), torch.zeros(n, device=run.device)
            fake = G(zz)
            scores = Scores(real=D(r), fake=D(fake.detach()))
            d_loss = run.hook.ganbench_discriminator_loss(run=run, step=Step(index, "d"), scores=scores,
                                                         targets=Targets(real=ones, fake=zeros))
            run.optimizers.discriminator.zero_grad(set_to_none=True)
            d_loss.backward()
            run.optimizers.discriminator.step()
            D.requires_grad_(False)
            g_loss = run.hook.ganbench_generator_loss(run=run, step=Step(index, "g"), batch=Batch(real=r, fake=fake),
                                                      scores=Scores(real=None, fake=D(fake)))
            run.optimizers.generator.zero_grad(set_to_none=True)
            g_loss.backward()
            run.optimizers.generator.step()
            D.requires_grad_(True)
            record.append((float(d_loss), float(g_loss)))
    tol = PARITY_TOLERANCE
    lr = max(spec.settings.optimizer_g.lr, spec.settings.optimizer_d.lr)
    loss_err = max(abs(a - b) / max(1.0, abs(a)) for pa, pb in zip(*losses) for a, b in zip(pa, pb))
    worst, outliers, total = 0.0, 0, 0
    for net in ("generator", "discriminator"):
        for (name, a), b in zip(getattr(runs[0].models, net).state_dict().items(),
                                getattr(runs[1].models, net).state_dict().values()):
            if not a.is_floating_point():
                continue
            diff = (a - b.cpu()).abs()
            worst = max(worst, float(diff.max()))
            outliers += int((diff > tol["weight_atol"]).sum())
            total += diff.numel()
    bound = 2 * lr * spec.settings.steps
    passed = loss_err <= tol["loss_rtol"] and worst <= bound and outliers <= tol["weight_outliers"] * total
    same = device.type == "cpu"
    result.update({"devices": [str(d) for d in devices], "steps": spec.settings.steps, "tolerance": tol,
                   "weight_bound": bound, "losses": losses, "max_loss_rel_err": loss_err, "max_weight_abs_err": worst,
                   "weights_over_atol": outliers, "weights": total, "tf32": False,
                   "headline": (f"{'cpu against cpu (no GPU): the path only; ' if same else ''}losses rel. err "
                                f"{loss_err:.1e} (<= {tol['loss_rtol']:.0e}), weights max {worst:.1e} "
                                f"(<= {bound:.1e}), {outliers}/{total} over {tol['weight_atol']:.0e}")})
    return passed


def train_weights(spec: Any, device: Any, folder: Path) -> dict[str, Any]:
    from ganbench.trainer import build_run, train

    run = build_run(spec, folder, device)
    status = train(run)[0]
    assert status == "completed", status
    return {f"{net}.{k}": v.detach().cpu().clone() for net in ("generator", "discriminator")
            for k, v in getattr(run.models, net).state_dict().items()}


def step_determinism(device: Any, size: dict[str, Any], out: Path, result: dict[str, Any]) -> bool:
    """Two runs of one seed under torch.use_deterministic_algorithms: every weight bit-identical."""
    import torch

    spec = tiny_spec(size["determinism_steps"], out, "determinism")
    torch.use_deterministic_algorithms(True)
    a, b = (train_weights(spec, device, out / "determinism" / f"det-{i}") for i in (1, 2))
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    torch.use_deterministic_algorithms(False)
    c, d = (train_weights(spec, device, out / "determinism" / f"free-{i}") for i in (1, 2))
    free_differ = [k for k in c if not torch.equal(c[k], d[k])]
    result.update({"steps": spec.settings.steps, "tensors": len(a), "deterministic_differ": differ,
                   "without_deterministic_differ": free_differ,
                   "headline": (f"deterministic: {len(a) - len(differ)}/{len(a)} tensors bit-identical; without it: "
                                f"{len(c) - len(free_differ)}/{len(c)}")})
    return not differ


def time_setting(extra: str, device: Any, warmup: int, timed: int, folder: Path) -> dict[str, float]:
    """Seconds per step after `warmup` steps (compilation happens there), from the trainer's own
    log records: one at the end of the warm-up, then one every `warmup` steps (a device read each)."""
    from ganbench.suite import load_suite
    from ganbench.trainer import build_run, train

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "suite.toml"
    path.write_text(SPEED_SUITE.format(steps=warmup + timed, log_every=warmup, extra=extra))
    run = build_run(load_suite(path).runs("default")[0], folder / "run", device)
    records: list[dict[str, Any]] = []
    assert train(run, progress=records.append)[0] == "completed"
    later = records[1:]
    return {"warmup_s": records[0]["sec_per_step"] * warmup,
            "sec_per_step": sum(r["sec_per_step"] for r in later) / len(later)}


def step_speed(device: Any, size: dict[str, Any], out: Path, result: dict[str, Any]) -> bool:
    """Steps/s of each speed setting against eager fp32, in this process, alternating over repeats."""
    cfg = size["speed"]
    labels = [label for label in SPEED_CHOICE[cfg["settings"]]]
    if device.type != "cuda":
        labels = [label for label in labels if "reduce-overhead" not in label]  # CUDA graphs: GPU only
    times: dict[str, list[float]] = {label: [] for label in labels}
    warm: dict[str, float] = {}
    for repeat in range(cfg["repeats"]):
        for label in labels if repeat % 2 == 0 else labels[::-1]:
            got = time_setting(SPEED_SETTINGS[label], device, cfg["warmup"], cfg["timed"],
                               out / "speed" / f"{label.replace(' ', '_')}-{repeat}")
            times[label].append(got["sec_per_step"])
            warm.setdefault(label, got["warmup_s"])  # the first, with a cold compilation if any
    base = min(times["fp32 eager"])
    rows = {label: {"sec_per_step": min(t), "steps_per_s": 1 / min(t), "vs_fp32_eager": base / min(t),
                    "first_warmup_s": warm[label]} for label, t in times.items()}
    result.update({"workload": "stability vanilla: DCGAN width 32, mnist5k, bce, batch 64, diagnostics on",
                   "warmup_steps": cfg["warmup"], "timed_steps": cfg["timed"], "repeats": cfg["repeats"],
                   "device": str(device), "settings": rows,
                   "table": ["| setting | steps/s | vs fp32 eager | first warm-up s (compilation) |", "|---|---|---|---|",
                             *(f"| {k} | {v['steps_per_s']:.2f} | {v['vs_fp32_eager']:.2f} | {v['first_warmup_s']:.1f} |"
                               for k, v in rows.items())],
                   "notes": [f"best of {cfg['repeats']} x {cfg['timed']} steps after {cfg['warmup']} warm-up steps, "
                             f"measured on {device}"],
                   "headline": ", ".join(f"{k} x{v['vs_fp32_eager']:.2f}" for k, v in rows.items() if k != "fp32 eager")})
    return True


def stability_suite(size: dict[str, Any], out: Path) -> Path:
    """suites/stability.toml with one seed, plus the scaled-down scale of the cpu and quick sizes."""
    text = (ROOT / "suites" / "stability.toml").read_text()
    text = re.sub(r"^seeds\s*=.*$", "seeds = [0]", text, count=1, flags=re.M)
    if size["stability"].get("metrics"):
        text = re.sub(r"^metrics\s*=.*$", f"metrics = {size['stability']['metrics']}", text, count=1, flags=re.M)
    table = size["stability"].get("table")
    if table:
        text += f"\n[scales.{size['stability']['scale']}]\n" + "".join(f"{k} = {v}\n" for k, v in table.items())
    path = out / "stability-suite.toml"
    path.write_text(text)
    return path


def run_phases(run_dir: Path) -> dict[str, Any]:
    """A finished run's times: training (steps x the median seconds per step of log intervals that
    hold no eval point) and the rest of its wall time (set-up, eval points, checkpoints)."""
    import statistics

    from ganbench.rundir import read_jsonl

    status = json.loads((run_dir / "status.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    records = read_jsonl(run_dir / "metrics.jsonl")
    evals = {r["step"] for r in records if r["kind"] == "eval"}
    train = [r for r in records if r["kind"] == "train"]
    clean = [r["sec_per_step"] for prev, r in zip(train, train[1:]) if prev["step"] not in evals] or \
            [r["sec_per_step"] for r in train]
    per_step = statistics.median(clean)
    steps_ = status.get("steps") or config["settings"]["steps"]
    final = [r for r in records if r["kind"] == "eval"][-1:] or [{}]
    return {"config": config["config"], "status": status["status"], "wall_s": status["wall_s"], "steps": steps_,
            "sec_per_step": per_step, "train_s": per_step * steps_, "rest_s": status["wall_s"] - per_step * steps_,
            "eval_points": len(evals), "fid_points": sum(1 for r in records if r["kind"] == "eval" and "fid" in r),
            "final_fid": final[0].get("fid"), "fid_samples": config["settings"]["eval_samples"],
            "memory": status.get("memory", {})}


def step_stability(device: Any, size: dict[str, Any], out: Path, result: dict[str, Any]) -> bool:
    cfg = size["stability"]
    suite = stability_suite(size, out)
    command = [sys.executable, "-m", "ganbench.cli", "run", str(suite), "--only", *STABILITY_CONFIGS, "--scale",
               cfg["scale"], "--device", str(device), "--out", str(out / "stability"), "--jobs", str(cfg["jobs"])]
    rc, _ = subprocess_step(command, out, "stability")
    runs = [run_phases(d) for d in sorted((out / "stability" / "runs").glob("*")) if (d / "status.json").is_file()]
    result.update({"command": " ".join(command[1:]), "scale": cfg["scale"], "jobs": cfg["jobs"], "runs": runs,
                   "table": ["| config | status | steps | s/step | training s | rest s (set-up, evals) | wall s | "
                             "FID points (samples) | final FID | peak memory MiB |", "|---|---|---|---|---|---|---|---|---|---|",
                             *(f"| {r['config']} | {r['status']} | {r['steps']} | {r['sec_per_step']:.4f} | "
                               f"{r['train_s']:.0f} | {r['rest_s']:.0f} | {r['wall_s']:.0f} | {r['fid_points']} "
                               f"({r['fid_samples']}) | {r['final_fid'] if r['final_fid'] is None else round(r['final_fid'], 1)}"
                               f" | {', '.join(f'{k} {v}' for k, v in r['memory'].items())} |" for r in runs)],
                   "notes": [f"{cfg['jobs']} run(s) at once on {device}" + ("; their times include sharing the device"
                                                                           if cfg["jobs"] > 1 else "")],
                   "headline": "; ".join(f"{r['config']} {r['status']} in {r['wall_s']:.0f} s" for r in runs)})
    return rc == 0 and len(runs) == len(STABILITY_CONFIGS) and all(r["status"] == "completed" for r in runs)


def step_estimate(device: Any, size: dict[str, Any], out: Path, result: dict[str, Any]) -> bool:
    suite = stability_suite(size, out)
    command = [sys.executable, "-m", "ganbench.cli", "estimate", str(suite), "--only", *STABILITY_CONFIGS, "--scale",
               size["stability"]["scale"], "--device", str(device), "--json", "--steps", str(size["estimate_steps"])]
    rc, text = subprocess_step(command, out, "estimate")
    if rc != 0:
        return False
    estimate = json.loads(text[text.index("{"):text.rindex("}") + 1])
    measured_file = out / "steps" / "stability.json"
    measured = ({r["config"]: r for r in json.loads(measured_file.read_text()).get("runs", [])}
                if measured_file.is_file() else {})
    rows = []
    for c in estimate["configs"]:
        m = measured.get(c["config"])
        row = {"config": c["config"], "estimate_here_s": c["run_s_here"], "gpu_model_s": c["run_s_gpu"],
               "estimate_sec_per_step": c["sec_per_step_here"]}
        if m:
            row.update({"measured_s": m["wall_s"], "measured_sec_per_step": m["sec_per_step"],
                        "here_over_measured": c["run_s_here"] / m["wall_s"],
                        "step_here_over_measured": c["sec_per_step_here"] / m["sec_per_step"],
                        "gpu_model_over_measured": [g / m["wall_s"] for g in c["run_s_gpu"]]})
        rows.append(row)
    totals = estimate["totals"]
    if measured and all(r["config"] in measured for r in rows):  # the one-time work (real statistics, the
        wall = sum(m["wall_s"] for m in measured.values())     # classifier) is in the suite's total only
        rows.append({"config": "suite (one-time work included)", "estimate_here_s": totals["here_s"],
                     "gpu_model_s": totals["gpu_s"], "estimate_sec_per_step": float("nan"), "measured_s": wall,
                     "here_over_measured": totals["here_s"] / wall,
                     "gpu_model_over_measured": [g / wall for g in totals["gpu_s"]]})
    result.update({"command": " ".join(command[1:]), "configs": rows, "totals": totals,
                   "gpu_model": estimate["gpu_model"], "device": str(device),
                   "table": ["| config | estimated s (timed here) | GPU model s | measured s | estimate/measured | "
                             "s/step estimated / measured |", "|---|---|---|---|---|---|",
                             *(f"| {r['config']} | {r['estimate_here_s']:.0f} | {r['gpu_model_s'][0]:.0f}-"
                               f"{r['gpu_model_s'][1]:.0f} | {r.get('measured_s', float('nan')):.0f} | "
                               f"{r.get('here_over_measured', float('nan')):.2f} | "
                               f"{r.get('step_here_over_measured', float('nan')):.2f} |" for r in rows)],
                   "notes": ["the GPU model's figures are a projection; on a GPU, the measured column replaces them"
                             + ("" if device.type == "cuda" else " (this check ran on the CPU: still projected)"),
                             "the first run measured also holds the one-time work (real statistics, the classifier), "
                             "which the estimate counts in the suite's total only"],
                   "headline": "; ".join(f"{r['config']} estimate/measured {r['here_over_measured']:.2f}"
                                         for r in rows if "here_over_measured" in r) or "no measured runs to compare"})
    return True


def step_bench(device: Any, size: dict[str, Any], out: Path, result: dict[str, Any]) -> bool:
    from ganbench.bench import RATIO_LINE

    rc, text = subprocess_step([sys.executable, "-m", "ganbench.cli", "bench", "--device", str(device), *size["bench"]],
                               out, "bench")
    ratios = {w: float(v) for w, v in RATIO_LINE.findall(text)}
    result.update({"ratios": ratios, "lines": [l for l in text.splitlines() if l.startswith(("repeat", "ratio", "device"))],
                   "headline": ", ".join(f"{k} {v:.3f}" for k, v in ratios.items())})
    return rc == 0 and bool(ratios)


def step_fid(device: Any, size: dict[str, Any], out: Path, result: dict[str, Any]) -> bool:
    from ganbench.bench import RATIO_LINE

    command = [sys.executable, str(ROOT / "benchmarks" / "fid_throughput.py"), "--device", str(device), *size["fid"]]
    rc, text = subprocess_step(command, out, "fid")
    ratios = {w: float(v) for w, v in RATIO_LINE.findall(text)}
    result.update({"command": " ".join(command[1:]), "ratios": ratios,
                   "lines": [l for l in text.splitlines() if re.search(r"images/s|ratio|cold|warm", l)][-12:],
                   "headline": ", ".join(f"{k} {v:.3f}" for k, v in ratios.items())})
    return rc == 0 and bool(ratios)


def step_concurrency(device: Any, size: dict[str, Any], out: Path, result: dict[str, Any]) -> bool:
    """`ganbench run --jobs N` on the one device: N seeds of the vanilla step at once, each run's
    steps/s from its own log records (after its warm-up), summed: what N runs at once deliver."""
    from ganbench.rundir import read_jsonl
    from ganbench.threads import per_run as per_run_threads

    cfg, rows = size["concurrency"], []
    for jobs in cfg["jobs"]:
        folder = out / "concurrency" / f"jobs-{jobs}"
        folder.mkdir(parents=True, exist_ok=True)
        suite = folder / "suite.toml"
        suite.write_text(SPEED_SUITE.format(steps=cfg["warmup"] + cfg["timed"], log_every=cfg["warmup"], extra="")
                         .replace("[suite]\n", f"[suite]\nseeds = {list(range(jobs))}\n"))
        rc, _ = subprocess_step([sys.executable, "-m", "ganbench.cli", "run", str(suite), "--scale", "default",
                                 "--device", str(device), "--jobs", str(jobs), "--out", str(folder / "out")],
                                out, f"concurrency-{jobs}")
        per_run = []
        for run_dir in sorted((folder / "out" / "runs").glob("*")):
            later = [r["sec_per_step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"][1:]
            if later:
                per_run.append(len(later) / sum(later))
        if rc != 0 or len(per_run) != jobs:
            result.update({"failed_at_jobs": jobs, "rows": rows})
            return False
        threads, why = per_run_threads(jobs)  # as `ganbench run` chose them in its run processes
        rows.append({"jobs": jobs, "threads_per_run": threads, "threads_why": why,
                     "per_run_steps_per_s": sum(per_run) / jobs, "aggregate_steps_per_s": sum(per_run)})
    base = rows[0]["aggregate_steps_per_s"]
    for row in rows:
        row["aggregate_vs_one"] = row["aggregate_steps_per_s"] / base
    result.update({"rows": rows, "workload": "stability vanilla step, metrics off", "device": str(device),
                   "table": ["| runs at once | CPU threads per run | steps/s per run | steps/s together | together vs one run |",
                             "|---|---|---|---|---|", *(f"| {r['jobs']} | {r['threads_per_run']} | "
                                                        f"{r['per_run_steps_per_s']:.2f} | "
                                                        f"{r['aggregate_steps_per_s']:.2f} | {r['aggregate_vs_one']:.2f} |"
                                                        for r in rows)],
                   "notes": ["CPU threads per run as `ganbench run` chose them (ganbench.threads): "
                             + "; ".join(f"{r['jobs']} at once: {r['threads_why']}" for r in rows)],
                   "headline": ", ".join(f"{r['jobs']} at once x{r['aggregate_vs_one']:.2f}" for r in rows)})
    return True


STEPS = {"env": step_env, "tests": step_tests, "parity": step_parity, "determinism": step_determinism,
         "speed": step_speed, "stability": step_stability, "estimate": step_estimate,
         "concurrency": step_concurrency, "bench": step_bench,
         "fid": step_fid}


def runs_per_device(records: list[dict[str, Any]], device: str) -> dict[str, Any] | None:
    """How many stability runs fit on the device at once: measured per-run memory on cuda; on the
    CPU a projection (the run processes' peak resident memory above a bare import, plus a typical
    CUDA context), for an 80 GiB and a 141 GiB GPU."""
    by = {r["step"]: r["result"] for r in records}
    runs, env = by.get("stability", {}).get("runs", []), by.get("env", {})
    if not runs:
        return None
    if device.startswith("cuda") and all("device_peak_reserved_mib" in r["memory"] for r in runs):
        per_run = max(r["memory"]["device_peak_reserved_mib"] for r in runs) + env.get("context_mib", 0)
        total = env.get("total_mib", 0)
        fit = int(0.9 * total // per_run) if per_run else 0
        text = (f"Measured on {env.get('device_name')}: at most {per_run:.0f} MiB per run (the largest peak "
                f"reserved by torch's allocator, {', '.join(r['config'] for r in runs)}, plus this device's context "
                f"{env.get('context_mib', 0)} MiB): about {fit} runs fit in 90% of its {total / 1024:.0f} GiB; each "
                f"run also needs CPU cores ({env.get('cpu_count')} here).")
        return {"measured": True, "per_run_mib": per_run, "fit": fit, "text": text}
    rss = [r["memory"].get("host_peak_rss_mib") for r in runs if r["memory"].get("host_peak_rss_mib")]
    if not rss:
        return None
    above = max(rss) - env.get("bare_import_rss_mib", 0)
    per_run = above + CUDA_CONTEXT_TYPICAL_MIB
    fits = {gib: int(0.9 * gib * 1024 // per_run) for gib in (80, 141)}
    text = (f"PROJECTION, no GPU measured: a stability run's process peaked at {max(rss):.0f} MiB resident on the "
            f"CPU, {above:.0f} MiB above a bare import of torch and ganbench (at this check's scale); with a typical "
            f"CUDA context ({CUDA_CONTEXT_TYPICAL_MIB} MiB, not measured) that is about {per_run:.0f} MiB a run, so "
            f"about {fits[80]} runs on an 80 GiB H100 and {fits[141]} on a 141 GiB H200 by memory alone; CPU cores "
            f"bound it sooner. The GPU check replaces this with measured figures.")
    return {"measured": False, "per_run_mib": per_run, "fit": fits, "text": text}


def summary_ratios(records: list[dict[str, Any]]) -> list[tuple[str, float, str]]:
    """The check's ratio lines (ganbench.bench.ratio_line): speed-ups, estimate/measured, bench."""
    by = {r["step"]: r["result"] for r in records}
    ratios = []
    for label, row in by.get("speed", {}).get("settings", {}).items():
        if label != "fp32 eager":
            ratios.append((f"{label.replace(' + ', '+').replace(' ', '-')}/fp32-eager", row["vs_fp32_eager"],
                           "steps/s against eager fp32, same process"))
    for row in by.get("estimate", {}).get("configs", []):
        if "here_over_measured" in row:
            name = "suite" if row["config"].startswith("suite") else row["config"]
            ratios.append((f"estimate/measured[{name}]", row["here_over_measured"], "wall time, estimated here"))
    for what, value in by.get("bench", {}).get("ratios", {}).items():
        ratios.append((what, value, "ganbench bench"))
    return ratios


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the step's process group (ganbench runs checkpoint and stop), SIGKILL after 15 s."""
    import signal

    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_step(name: str, args: argparse.Namespace, size: str, out: Path, timeout: float) -> dict[str, Any]:
    """One step in a fresh process (a crash or a hung kernel stays inside it): its outcome, time,
    result (the JSON the step wrote) and, unless it passed, its log's last lines."""
    log = out / "logs" / f"{name}.log"
    result_file = out / "steps" / f"{name}.json"
    result_file.unlink(missing_ok=True)
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8")}
    command = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--device", args.device,
               "--size", size, "--out", str(out)]
    started = time.perf_counter()
    with log.open("w") as sink:
        # Its own process group: a timeout ends the step's children too (`ganbench run` and its runs).
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
            stop_group(proc)
    wall = time.perf_counter() - started
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    outcome = "timed out" if rc is None else "passed" if rc == 0 else "failed"
    record = {"step": name, "outcome": outcome, "rc": rc, "wall_s": round(wall, 1), "timeout_s": round(timeout),
              "log": str(log.relative_to(out)), "result": result}
    if outcome != "passed":
        outputs = [log, *sorted((out / "logs").glob(f"{name}*.out"))]
        record["log_tail"] = [line for path in outputs for line in path.read_text(errors="replace").splitlines()
                              if not line.startswith("W1")][-25:]  # torch's compile warnings aside
    return record


def summary_markdown(check: dict[str, Any]) -> str:
    """gpu-check.md: what a user pastes back (docs/gpu.md)."""
    lines = [f"# ganbench device check: {check['device_name']}", "",
             f"{check['started']} to {check['finished']}, {check['wall_s']:.0f} s, size `{check['size']}`"
             f"{' (scaled down from the cuda check: ' + check['scaled_down'] + ')' if check.get('scaled_down') else ''}.",
             check["conditions"], "",
             "| step | outcome | wall s | figures |", "|---|---|---|---|"]
    for s in check["steps"]:
        lines.append(f"| {s['step']} | {s['outcome']} | {s['wall_s']} | {headline(s['step'], s['result'])} |")
    for s in check["steps"]:
        if s["result"].get("table"):
            lines += ["", f"## {s['step']}", "", *s["result"]["table"]]
        if s["result"].get("notes"):
            lines += ["", *(f"- {n}" for n in s["result"]["notes"])]
    fit = check.get("runs_per_device")
    if fit:
        lines += ["", "## Stability runs at once on this device", "", fit["text"]]
    failed = [s for s in check["steps"] if s["outcome"] != "passed"]
    for s in failed:
        lines += ["", f"## {s['step']}: {s['outcome']} (last lines of {s['log']})", "", "```",
                  *s.get("log_tail", []), "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda (default when present), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="every step at its smallest size (CI)")
    parser.add_argument("--only", nargs="+", choices=ORDER, metavar="STEP", help=f"only these steps: {', '.join(ORDER)}")
    parser.add_argument("--out", help="output folder (default: reports/gpu-check/<device>-<UTC time>/ here, git-ignored)")
    parser.add_argument("--step", choices=ORDER, help=argparse.SUPPRESS)  # run one step (in its own process)
    parser.add_argument("--size", choices=tuple(TIMEOUTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        result: dict[str, Any] = {}
        try:
            passed = STEPS[args.step](torch_device(args.device), SIZES[args.size], Path(args.out), result)
        finally:  # what was measured before a failure is kept
            write_json(Path(args.out) / "steps" / f"{args.step}.json", result)
        return 0 if passed else 1
    import torch

    from ganbench.bench import conditions, load_average, ratio_line
    from ganbench.threads import passive_wait

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device}: no CUDA device here; use --device cpu", file=sys.stderr)
        return 2
    size = "quick" if args.quick else "cuda" if args.device.startswith("cuda") else "cpu"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    # Like `ganbench run`, under reports/ of the current folder (git-ignored in the repository's).
    out = Path(args.out or f"reports/gpu-check/{args.device.replace(':', '')}-{stamp}").resolve()
    for folder in (out / "logs", out / "steps"):
        folder.mkdir(parents=True, exist_ok=True)
    limits = TIMEOUTS[size]
    # As `ganbench run` does for its run processes: idle OpenMP threads sleep instead of spinning, in
    # every step's process (they start after this; ganbench.threads).
    passive_wait()
    if not args.device.startswith("cuda") and not os.environ.get("OMP_NUM_THREADS"):
        # On the CPU the check times one thread per step process unless told otherwise: on this
        # project's 2-core CPU with other work beside it, two threads made the speed step's timings
        # swing up to 20x between log intervals (bf16: 0.08-1.57 s/step at 2 threads, passive wait
        # included; 0.032-0.043 at 1), so no ratio measured at 2 threads there meant anything.
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    ran_under = conditions(args.device)
    print(ran_under)
    scaled = SCALED_DOWN.get(size) if not args.device.startswith("cuda") or args.quick else None
    if scaled:
        print(f"size {size}: scaled down from the cuda check: {scaled}")
    print(f"writing {out}")
    check: dict[str, Any] = {"device": args.device, "size": size, "scaled_down": scaled, "conditions": ran_under,
                             "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "steps": []}
    began = time.perf_counter()
    for name in [n for n in ORDER if not args.only or n in args.only]:
        left = limits["budget"] - (time.perf_counter() - began)
        timeout = min(limits[name], left)
        if timeout < STEP_TIMEOUT_FLOOR:
            record = {"step": name, "outcome": "skipped", "rc": None, "wall_s": 0, "timeout_s": 0, "log": "",
                      "result": {"notes": [f"skipped: {left:.0f} s of the check's {limits['budget']} s budget left"]}}
        else:
            print(f"{name} (timeout {timeout:.0f} s) ...", flush=True)
            record = run_step(name, args, size, out, timeout)
        check["steps"].append(record)
        print(f"  {record['outcome']} in {record['wall_s']} s: {headline(name, record['result'])}", flush=True)
    env = next((s["result"] for s in check["steps"] if s["step"] == "env"), {})
    check["device_name"] = env.get("device_name", args.device)
    check["runs_per_device"] = runs_per_device(check["steps"], args.device)
    check["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    check["wall_s"] = round(time.perf_counter() - began, 1)
    check["passed"] = all(s["outcome"] == "passed" for s in check["steps"])
    write_json(out / "gpu-check.json", check)
    (out / "gpu-check.md").write_text(summary_markdown(check))
    if check["runs_per_device"]:
        print(check["runs_per_device"]["text"])
    print(f"at the end: {load_average()}")
    ratios = summary_ratios(check["steps"])
    for what, value, note in ratios:
        print(ratio_line(what, value, note))
    failed = [s["step"] for s in check["steps"] if s["outcome"] != "passed"]
    print(f"{'passed' if not failed else 'NOT passed: ' + ', '.join(failed)}: {len(check['steps'])} steps in "
          f"{check['wall_s']:.0f} s; {out / 'gpu-check.md'} and {out / 'gpu-check.json'}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
