"""The guide's example package (examples/my-gan-tricks) installs as a real distribution, ganbench
finds its plugins through the entry-point group, and its own tests (which use ganbench.testing)
pass against the installed copy. The dev venv is not touched: pip installs into a temporary folder,
offline, with the venv's own setuptools."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "examples" / "my-gan-tricks"
PLUGINS = {("trick", "my-lr-decay", "lr_decay"), ("loss", "ragan", "ragan"), ("metric", "nn-distance", "nn_distance")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder, copied source folder, environment): the package pip-installed into the site
    folder from a copy (pip builds in the source tree; the copy keeps examples/ clean)."""
    tmp = tmp_path_factory.mktemp("example-package")
    src, site = tmp / "src", tmp / "site"
    shutil.copytree(PACKAGE, src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                    "--disable-pip-version-check", "--quiet", "--target", str(site), str(src)],
                   check=True, capture_output=True, text=True, timeout=300)
    shutil.rmtree(src / "my_gan_tricks")  # from here on, only the installed copy can be imported
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return site, src, env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_it_installs_as_a_distribution_with_entry_points(installed):
    site, _, _ = installed
    (dist,) = site.glob("my_gan_tricks-0.1.dist-info")
    entry_points = (dist / "entry_points.txt").read_text()
    for _, name, module in PLUGINS:
        assert f"{name} = my_gan_tricks.{module}" in entry_points


def test_ganbench_lists_its_plugins_with_the_distribution_as_source(installed, tmp_path):
    site, _, env = installed
    done = run(["-c", "import sys; from ganbench.cli import main; sys.exit(main(['plugins', '--json']))"],
               env, tmp_path)
    assert done.returncode == 0, done.stderr
    listed = {(p["kind"], p["name"]): p for p in json.loads(done.stdout)}
    for kind, name, module in PLUGINS:
        assert listed[kind, name]["source"] == f"my-gan-tricks 0.1 (my_gan_tricks.{module})"
    where = run(["-c", "import my_gan_tricks; print(my_gan_tricks.__file__)"], env, tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(site)


def test_its_own_tests_pass_against_the_installed_copy(installed):
    _, src, env = installed
    done = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", str(src / "tests")], env, src.parent)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
