"""Benchmark (not a test) of ganbench's FID/KID path.

1. Images per second of `ganbench.fid.fid_kid` against calling torch-fidelity's
   `calculate_metrics` directly, on the same uint8 images, device and arguments, measured
   alternately so machine noise hits both. Neither side caches here, so both run Inception on both
   sets; the ratio (ganbench / direct) is the wrapper's overhead, and the target is >= 0.95.
2. A suite's evaluation with a cold real-statistics cache (the first run on a machine) against a
   warm one (every later run): the same tiny mnist5k training run twice, timing only evaluation
   and counting the Inception passes (batches and images through the extractor) of each.

    python benchmarks/fid_throughput.py                      # a few minutes on a 2-core CPU
    python benchmarks/fid_throughput.py --quick              # every step at a few images (CI runs this)
    python benchmarks/fid_throughput.py --images 500 --repeats 3 --eval-samples 1000 --real-samples 5000

Everything goes to a temporary ganbench cache, so the user's cache is never read or written.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ganbench.bench import conditions, load_average, ratio_line

# --quick: the whole path at a few images, one repeat (tests/test_benchmarks.py runs it)
QUICK = {"images": 8, "repeats": 1, "batch_size": 8, "eval_samples": 8, "real_samples": 16}

SUITE = """
[suite]
name = "fid-bench"
question = "How long does an evaluation take with a cold and a warm real-statistics cache?"
seeds = [0]
[dataset]
name = "mnist5k"
[defaults]
architecture = {{ name = "dcgan", width = 16 }}
batch_size = 16
steps = 1
log_every = 1
eval_every = 1
grid_size = 4
metrics = ["fid"]
[scales.default]
eval_samples = {eval_samples}
real_samples = {real_samples}
[[configs]]
name = "tiny"
"""


class Images(torch.utils.data.Dataset):
    """The direct side's own dataset over uint8 images, as a torch-fidelity user would write it."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(args: argparse.Namespace, device: torch.device) -> None:
    import torch_fidelity

    from ganbench import fid, inception
    from ganbench_plugins.datasets.mnist5k import Mnist5k

    digits = Mnist5k().load("cpu").x
    n = args.images
    a = fid.ImageSet(digits[:n].repeat(1, 3, 1, 1), "first digits")
    b = fid.ImageSet(digits[-n:].repeat(1, 3, 1, 1), "last digits")
    weights = fid.resolve_weights()

    inside: list[float] = []  # seconds spent inside calculate_metrics during each ganbench call
    calculate_metrics = torch_fidelity.calculate_metrics

    def timed_calculate_metrics(**kwargs):
        start = time.perf_counter()
        try:
            return calculate_metrics(**kwargs)
        finally:
            sync(device)
            inside.append(time.perf_counter() - start)

    def ganbench_path() -> dict[str, float]:
        # ganbench.fid calls torch_fidelity.calculate_metrics through the module, so this sees it.
        torch_fidelity.calculate_metrics = timed_calculate_metrics
        try:
            return fid.fid_kid(a, b, weights=weights, device=device, batch_size=args.batch_size,
                               cache_real=False).values
        finally:
            torch_fidelity.calculate_metrics = calculate_metrics

    def direct() -> dict[str, float]:
        # The same arguments ganbench passes, written out. ganbench also turns cuDNN's TF32 off for
        # FID (it changes the features); the direct call gets the same setting so only the
        # wrapper's overhead is measured. On the CPU it changes nothing.
        with fid.float32_convolutions():
            m = torch_fidelity.calculate_metrics(
                input1=Images(a.images), input2=Images(b.images), fid=True, kid=True, isc=False,
                feature_extractor="inception-v3-compat",
                feature_extractor_weights_path=inception.weights_buffer(weights.path, weights.origin),  # never the file
                cuda=device.type == "cuda", batch_size=args.batch_size, kid_subset_size=min(1000, n),
                save_cpu_ram=True, verbose=False, cache=False)
        return {"fid": m[torch_fidelity.KEY_METRIC_FID], "kid_mean": m[torch_fidelity.KEY_METRIC_KID_MEAN]}

    print(f"[1] FID+KID of {n} vs {n} mnist5k digits on {device}, batch {args.batch_size}, "
          f"{args.repeats} alternating repeats (first call of each discarded as warm-up: {args.warmup})")
    times: dict[str, list[float]] = {"ganbench": [], "direct": []}
    results = {}
    order = [("ganbench", ganbench_path), ("direct", direct)]
    if args.warmup:
        for _, fn in order:
            fn()
    for r in range(args.repeats):
        for name, fn in order if r % 2 == 0 else order[::-1]:  # ABBA: neither side always goes first
            sync(device)
            start = time.perf_counter()
            results[name] = fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    for name, ts in times.items():
        rates = ", ".join(f"{2 * n / t:.2f}" for t in ts)
        print(f"    {name:9s} {statistics.median(ts):7.2f} s per call  ({rates} images/s)")
    ratio = statistics.median(times["direct"]) / statistics.median(times["ganbench"])
    # Timing noise on a busy machine swamps the difference; what ganbench adds is the time of each
    # of its calls spent outside calculate_metrics, which is measured exactly.
    overhead = [t - i for t, i in zip(times["ganbench"], inside[-len(times["ganbench"]):])]
    median_overhead = statistics.median(overhead)
    print(f"    ganbench's own time per call, outside calculate_metrics: {1000 * median_overhead:.1f} ms "
          f"-> ratio from overhead alone: {1 - median_overhead / statistics.median(times['ganbench']):.4f}")
    same = abs(results["ganbench"]["fid"] - results["direct"]["fid"]) <= 1e-6 * abs(results["direct"]["fid"])
    print(f"    same FID from both: {same} ({results['ganbench']['fid']:.6f} vs {results['direct']['fid']:.6f})")
    print(ratio_line("ganbench/direct", ratio, f"images/s against torch-fidelity called directly, median of "
                                               f"{args.repeats}; target >= 0.95"))


class InceptionPasses:
    """Counts the batches and images through torch-fidelity's Inception while installed."""

    def __init__(self) -> None:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.cls, self.forward = FeatureExtractorInceptionV3, FeatureExtractorInceptionV3.forward
        self.batches = self.images = 0

    def __enter__(self) -> "InceptionPasses":
        forward = self.forward

        def counted(extractor, x, *a, **kw):
            self.batches += 1
            self.images += len(x)
            return forward(extractor, x, *a, **kw)

        self.cls.forward = counted
        return self

    def __exit__(self, *exc) -> None:
        self.cls.forward = self.forward


def cold_and_warm(args: argparse.Namespace, device: torch.device, work: Path) -> None:
    import ganbench.trainer as trainer
    from ganbench.suite import load_suite

    suite_file = work / "suite.toml"
    suite_file.write_text(SUITE.format(eval_samples=args.eval_samples, real_samples=args.real_samples))
    spec = load_suite(suite_file).runs("default")[0]
    eval_times: list[float] = []
    passes: dict[str, InceptionPasses] = {}
    evaluate = trainer.evaluate

    def timed_evaluate(*a, **kw):
        sync(device)
        start = time.perf_counter()
        record = evaluate(*a, **kw)
        sync(device)
        eval_times.append(time.perf_counter() - start)
        return record

    print(f"[2] a 1-step mnist5k run evaluated with {args.eval_samples} generated and "
          f"{args.real_samples} real samples, twice, on {device}")
    trainer.evaluate = timed_evaluate  # train() looks `evaluate` up in its module at each eval point
    try:
        for label in ("cold", "warm"):
            start = time.perf_counter()
            with InceptionPasses() as passes[label]:
                status = trainer.execute(spec, work / f"run-{label}", device)
            total = time.perf_counter() - start
            if status != "completed":
                error = work / f"run-{label}" / "error.txt"
                last = error.read_text().strip().splitlines()[-1:] if error.is_file() else []
                raise SystemExit(f"the {label} run {status}: {last[0] if last else 'no error.txt'} "
                                 f"(the whole of it is in {error}, removed with its temporary folder)")
            print(f"    {label} cache: evaluation {eval_times[-1]:6.2f} s   (whole run {total:6.2f} s); "
                  f"Inception passes {passes[label].batches} ({passes[label].images} images)")
    finally:
        trainer.evaluate = evaluate
    cold, warm = passes["cold"], passes["warm"]
    saved = cold.batches - warm.batches
    print(f"    saved by the warm cache: {eval_times[0] - eval_times[1]:.2f} s and {saved} Inception "
          f"pass{'es' * (saved != 1)} over {cold.images - warm.images} images (the {args.real_samples} real ones, "
          f"once per machine)")
    print(ratio_line("warm/cold", eval_times[1] / eval_times[0], "evaluation time"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images per side in part 1 (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed calls of each side (default 3)")
    parser.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=False,
                        help="one untimed call of each side first (worth it on a GPU)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per Inception pass (default 64)")
    parser.add_argument("--eval-samples", type=int, default=32, help="generated samples in part 2 (default 32)")
    parser.add_argument("--real-samples", type=int, default=128, help="real samples in part 2 (default 128)")
    parser.add_argument("--device", default=None, help="auto (default), cuda, cuda:N or cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--skip", choices=("throughput", "cache"), help="leave out one part")
    parser.add_argument("--quick", action="store_true",
                        help=f"a few images and one repeat, where not given: {QUICK}")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)

    from ganbench.environment import choose_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    print(conditions(device))
    with tempfile.TemporaryDirectory(prefix="ganbench-fid-bench-") as tmp:
        os.environ["GANBENCH_CACHE_DIR"] = str(Path(tmp) / "cache")
        os.environ.pop("GANBENCH_INCEPTION_WEIGHTS", None)
        from ganbench import fid

        start = time.perf_counter()
        weights = fid.resolve_weights()  # converting fid-helper's weights is not part of either timing
        print(f"weights {weights.path.name} (sha256 {weights.sha256[:12]}) ready in "
              f"{time.perf_counter() - start:.1f} s")
        if args.skip != "throughput":
            throughput(args, device)
        if args.skip != "cache":
            cold_and_warm(args, device, Path(tmp))
    print(f"at the end: {load_average()}")


if __name__ == "__main__":
    main()
