"""`ganbench fid PATH_A PATH_B`: FID and KID between two image folders, or a folder and a dataset.

A user's quick check, like torch-fidelity's own CLI, on the same path as the `fid` metric: a
dataset side uses the same real subset and the same real-statistics cache as a suite does.
"""
from __future__ import annotations

import json
import os
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganbench import fid
from ganbench.errors import UsageError
from ganbench.rundir import json_safe

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SUBSET_SEED = 0  # --max-samples keeps the same images of a folder every time
# A dataset side without --max-samples uses as many real samples as a suite at its default scale,
# so the two share one cache entry.
DEFAULT_DATASET_SAMPLES = 10_000


def run_fid(path_a: str, path_b: str, *, as_json: bool = False, device: str | None = None,
            weights: str | None = None, max_samples: int | None = None, download_weights: bool = False) -> int:
    from ganbench.environment import choose_device

    if max_samples is not None and max_samples < 2:
        raise UsageError(f"--max-samples {max_samples}: FID and KID need at least 2 images on each side")
    chosen = choose_device(device)
    resolved = fid.resolve_weights(weights, explicit_source="--inception-weights",  # fail before loading images
                                   allow_download=download_weights)
    a, a_is_data = load_side(path_a, "PATH_A", max_samples)
    b, b_is_data = load_side(path_b, "PATH_B", max_samples)
    # torch-fidelity caches its second input: put a dataset there, so its statistics are reused.
    swap = a_is_data and not b_is_data
    generated, real = (b, a) if swap else (a, b)
    print(f"ganbench fid: Inception features of {len(a)} + {len(b)} images on {chosen.type}"
          f"{' (dataset statistics may come from the cache)' if a_is_data or b_is_data else ''}", file=sys.stderr)
    result = fid.fid_kid(generated, real, weights=resolved, device=chosen, cache_real=a_is_data or b_is_data)
    if as_json:
        print(json.dumps(json_safe({
            "fid": result.fid, "kid_mean": result.kid_mean, "kid_std": result.kid_std,
            "n_a": len(a), "n_b": len(b), "provenance": result.provenance,
        }), indent=2, allow_nan=False))
    else:
        print(f"FID {result.fid:.4f}  KID {result.kid_mean:.6f} ± {result.kid_std:.6f}  "
              f"(A: {len(a)} images, B: {len(b)} images; KID subsets of {result.provenance['kid_subset_size']})")
    return 0


def load_side(value: str, label: str, max_samples: int | None) -> tuple[fid.ImageSet, bool]:
    """(images, whether they are a dataset's): a folder if `value` names one, else a dataset name."""
    path = Path(value).expanduser()
    if path.is_dir():
        return load_folder(path, label, max_samples), False
    if path.exists():
        raise UsageError(f'{label} "{value}": a file, not a folder of images or a dataset name')
    if os.sep in value or value.startswith((".", "~")):
        raise UsageError(f'{label} "{value}": no such folder')
    return load_dataset(value, label, max_samples), True


def image_files(folder: Path) -> list[Path]:
    """Image files under `folder`, at any depth, in sorted order (symlinked folders followed)."""
    found = []
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs.sort()
        found += [Path(parent, n) for n in sorted(names) if n.lower().endswith(IMAGE_SUFFIXES)]
    return found


def decode(path: Path) -> np.ndarray:
    """(H, W, 3) uint8: grayscale and palette images become RGB, alpha is dropped."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as exc:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        raise UsageError(f"cannot decode {path}: {exc}") from exc


def load_folder(folder: Path, label: str, max_samples: int | None) -> fid.ImageSet:
    """Every image of a folder (or a seeded subset of `max_samples`), all of one size.

    Mixed sizes are refused, not resized: a resize we chose would change what Inception sees, and
    the user should pick it (torch-fidelity then resizes each set to 299×299 itself).
    """
    files = image_files(folder)
    if not files:
        raise UsageError(f'{label} "{folder}": no {"/".join(IMAGE_SUFFIXES)} images in this folder or below')
    total = len(files)
    if max_samples is not None and max_samples < total:
        files = sorted(random.Random(SUBSET_SEED).sample(files, max_samples))
    # Pillow releases the GIL while decoding, so threads decode in parallel.
    with ThreadPoolExecutor() as pool:
        pixels = list(pool.map(decode, files))
    first = pixels[0].shape
    for path, p in zip(files, pixels):
        if p.shape != first:
            raise UsageError(
                f'{label} "{folder}": images differ in size: {files[0].name} is {first[1]}x{first[0]} but '
                f"{path.relative_to(folder)} is {p.shape[1]}x{p.shape[0]}; resize them to one size first")
    images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
    subset = f" (seeded subset of {total}, seed {SUBSET_SEED})" if len(files) < total else ""
    return fid.ImageSet(images, f"{len(files)} images from folder {folder.resolve()}{subset}")


def load_dataset(name: str, label: str, max_samples: int | None) -> fid.ImageSet:
    """A dataset plugin's real subset, at its default parameters, exactly as a suite's metric takes it."""
    from ganbench.params import parse
    from ganbench.registry import Registry
    from ganbench.settings import PluginChoice

    entry = Registry().get("dataset", name, f"{label} (not a folder)")
    params = parse(getattr(entry.cls, "params", None), {}, f'{label}: dataset "{name}"')
    check = getattr(entry.cls, "check", None)
    reason = check(params, None) if check else None
    if reason:
        raise UsageError(f'{label}: dataset "{name}" cannot be used: {reason}')
    choice = PluginChoice("dataset", entry.name, entry.cls, params)
    info = choice.instantiate().info()
    if info.kind != "image":
        raise UsageError(f'{label}: dataset "{name}" gives kind "{info.kind}", not images; FID needs images')
    data = choice.instantiate().load(torch.device("cpu"))
    return fid.real_set(data, max_samples or DEFAULT_DATASET_SAMPLES)
