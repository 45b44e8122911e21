"""docs/reference.md documents every public name a plugin author meets, and every field of the
objects hooks pass: a name or field added to the code and not to the page fails here."""
from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

import ganbench
import ganbench.testing
from ganbench import features, settings

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = (ROOT / "docs" / "reference.md").read_text()
MODULES = {"ganbench": ganbench, "ganbench.features": features, "ganbench.testing": ganbench.testing}
# Classes whose fields and public members must each be named in their own section.
CLASSES = [
    *(getattr(ganbench, n) for n in ganbench.__all__ if inspect.isclass(getattr(ganbench, n))),
    settings.RunSettings, settings.OptimizerSettings, settings.PluginChoice,
    features.RealSubset, features.ClassifierOutputs,
    ganbench.testing.PluginRun, ganbench.testing.Checked,
]


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body up to the next heading of the same or a higher level) for each heading."""
    heads = list(re.finditer(r"^(#+) (.*)$", text, flags=re.M))
    out = []
    for i, head in enumerate(heads):
        level = len(head.group(1))
        end = next((h.start() for h in heads[i + 1:] if len(h.group(1)) <= level), len(text))
        out.append((head.group(2), text[head.end():end]))
    return out


SECTIONS = sections(REFERENCE)


def section_of(name: str) -> str:
    """The body of the section whose heading names `name` in backticks (the smallest such one)."""
    found = [body for head, body in SECTIONS if f"`{name}`" in head]
    assert found, f"docs/reference.md has no heading naming `{name}`"
    return min(found, key=len)


def named(member: str, text: str) -> bool:
    """`member` appears in a code span of `text`: `member`, `member(...)`, `obj.member`, ..."""
    return any(re.match(rf"(?:[\w.]*\.)?{re.escape(member)}\b", span) for span in re.findall(r"`([^`\n]+)`", text))


def public_names(module_name: str) -> list[str]:
    module = MODULES[module_name]
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return sorted(n for n, obj in vars(module).items() if not n.startswith("_")
                  and (inspect.isfunction(obj) or inspect.isclass(obj))
                  and getattr(obj, "__module__", None) == module.__name__)


def members(cls: type) -> list[str]:
    """Fields (dataclass or NamedTuple) and the public methods and properties the class defines."""
    names = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else list(
        getattr(cls, "_fields", ()))
    names += [n for n, v in vars(cls).items() if not n.startswith("_") and n not in names
              and (inspect.isfunction(v) or isinstance(v, (property, classmethod, staticmethod)))
              and not n.startswith("ganbench_")]
    return names


@pytest.mark.parametrize("module_name", list(MODULES))
def test_every_public_name_has_a_heading(module_name):
    headings = " ".join(head for head, _ in SECTIONS)
    missing = [n for n in public_names(module_name) if f"`{n}`" not in headings]
    assert not missing, f"{module_name}: not in any heading of docs/reference.md: {', '.join(missing)}"


def test_the_toolkits_public_functions_are_found():
    # A guard on the test itself: the names it checks are the ones a metric author calls.
    assert {"due", "real_features", "generated_features", "pixels", "space_of"} <= set(public_names("ganbench.features"))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_field_is_documented_in_its_section(cls):
    body = section_of(cls.__name__)
    missing = [m for m in members(cls) if not named(m, body)]
    assert not missing, f"docs/reference.md, section `{cls.__name__}`: undocumented {', '.join(missing)}"


def test_the_g_phase_none_is_documented():
    body = section_of("Scores")
    assert "G phase" in body and "**None**" in body
    assert "`real`" in body


def test_the_guide_links_the_reference():
    guide = (ROOT / "docs" / "writing-plugins.md").read_text()
    assert "(reference.md)" in guide


def test_discriminate_on_an_unconditional_d_fails_as_documented():
    import torch

    D = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Flatten(0))
    x, labels = torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)
    assert ganbench.discriminate(D, x, None).shape == (3,)
    with pytest.raises(TypeError, match=r"discriminate\(D, x, labels\): this Sequential takes no labels") as info:
        ganbench.discriminate(D, x, labels)
    assert isinstance(info.value.__cause__, TypeError)  # Sequential's own error is kept, chained
    assert "takes no labels" in section_of("discriminate")
