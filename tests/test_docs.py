"""The plugin-author guide documents every hook, and its example trick works as written."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ganbench import hookspecs
from ganbench.rundir import read_jsonl
from ganbench.settings import CORE_KEYS
from ganbench.suite import load_suite
from ganbench.trainer import execute

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "writing-plugins.md").read_text()
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("ganbench_"))


def test_every_hook_is_documented_in_the_guide():
    documented = set(re.findall(r"^- `(ganbench_\w+)\(", GUIDE, flags=re.M))
    assert documented == set(HOOKS)


def test_every_hook_has_a_docstring():
    for name in HOOKS:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), name


def test_every_core_setting_is_documented():
    suites_doc = (ROOT / "docs" / "suites.md").read_text()
    for key in CORE_KEYS:
        assert f"`{key}`" in suites_doc, key


def test_every_suite_header_key_is_documented():
    from ganbench.suite import SuiteHeader

    table = (ROOT / "docs" / "suites.md").read_text().split("## The [suite] table", 1)[1].split("\n## ", 1)[0]
    for key in SuiteHeader.__dataclass_fields__:
        assert f"| `{key}` |" in table, key


def test_the_guides_example_trick_runs(tiny_suite, tmp_path):
    code = re.search(r"save this as\s+`lr_decay.py`.*?```python\n(.*?)```", GUIDE, flags=re.S | re.I).group(1)
    (tmp_path / "lr_decay.py").write_text(code)
    path = tiny_suite('steps = 8\nlog_every = 2\ntricks = [{ name = "my-lr-decay", start = 0.5 }]')
    path.write_text(path.read_text().replace("seeds = [0]", 'seeds = [0]\nplugins = ["./lr_decay.py"]'))
    spec = load_suite(path).runs("default")[0]
    assert execute(spec, tmp_path / "run", torch.device("cpu")) == "completed"
    lrs = [r["lr_g"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert lrs[:2] == [2e-4, 2e-4] and lrs[2] < 2e-4 and lrs[-1] == 0.0


EXAMPLE = ROOT / "examples" / "my-gan-tricks"


def shown_files() -> dict[str, str]:
    """The guide's code blocks marked `<!-- file: PATH -->`, by PATH."""
    return dict(re.findall(r"^<!-- file: (\S+) -->\n```\w*\n(.*?)```", GUIDE, flags=re.S | re.M))


def test_the_guides_code_is_the_example_packages_code():
    shown = shown_files()
    for path, code in shown.items():
        assert (ROOT / path).read_text() == code, f"docs/writing-plugins.md shows {path} otherwise than it is"
    package = {str(p.relative_to(ROOT)) for p in EXAMPLE.rglob("*") if p.suffix in (".py", ".toml")
               and "__pycache__" not in p.parts and p.name != "__init__.py"}
    assert package == set(shown), "every file of examples/my-gan-tricks is shown in the guide"


def test_the_guides_lr_decay_block_is_the_packages_file():
    code = re.search(r"save this as\s+`lr_decay.py`.*?```python\n(.*?)```", GUIDE, flags=re.S | re.I).group(1)
    assert code == (EXAMPLE / "my_gan_tricks" / "lr_decay.py").read_text()
