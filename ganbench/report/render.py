"""Render the view (`view.py`) through jinja2 templates into report.html and report.md.

HTML: autoescape is on, so every value from the data (suite name, config names, plugin text,
incident messages) is text, never markup. The page also carries a Content-Security-Policy that
allows no script and no external resource at all: images are data URIs and the style is inline.

Markdown: every value is escaped by the environment's `finalize` (pipes, brackets, emphasis,
angle brackets, newlines), except values marked `raw` (the report's own relative image paths).
"""
from __future__ import annotations

import re
from typing import Any

import jinja2

HTML_TEMPLATE = "report.html.j2"
MD_TEMPLATE = "report.md.j2"
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


class Raw(str):
    """A Markdown value written as it is (a path the report itself chose)."""


def md_escape(value: Any) -> str:
    """Text safe in a GitHub-flavoured Markdown paragraph or table cell."""
    if isinstance(value, Raw):
        return str(value)
    text = "" if value is None else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return re.sub(r"\s*[\r\n]+\s*", " ", text)


def _loader() -> jinja2.BaseLoader:
    return jinja2.PackageLoader("ganbench.report", "templates")


def html_environment() -> jinja2.Environment:
    return jinja2.Environment(loader=_loader(), autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def md_environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=_loader(), autoescape=False, finalize=md_escape,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["raw"] = Raw
    return env


def render_html(view: dict[str, Any]) -> str:
    return html_environment().get_template(HTML_TEMPLATE).render(**view)


def render_md(view: dict[str, Any]) -> str:
    return md_environment().get_template(MD_TEMPLATE).render(**view)
