"""Sphinx configuration: MyST Markdown, furo, API reference from docstrings."""

from __future__ import annotations

from pathlib import Path

import loanstate

project = "loanstate"
author = "the loanstate team"
copyright = "2026, the loanstate team"
release = loanstate.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.graphviz",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = "loanstate"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
nitpicky = False
# Diagrams are drawn into the page as SVG when the docs are built (Graphviz's `dot`),
# so the built docs load no script from another host: lenders' networks are often
# air-gapped, and a diagram that needs a CDN shows as raw text there.
graphviz_output_format = "svg"
suppress_warnings = ["myst.xref_missing"]


def _render_default_lifecycle() -> None:
    """Write the default lifecycle's diagram and table from the shipped definition itself."""
    machine = loanstate.default_machine()
    rows = [f"| {before} | {t.after} | {t.trigger or ''} |" for t in machine.transitions for before in t.before]
    statuses = [f"| `{name}` | {text} |" for name, text in machine.descriptions.items()]
    text = "\n".join(
        [
            "```{graphviz}",
            machine.to_dot().rstrip(),
            "```",
            "",
            "| status | meaning |",
            "|---|---|",
            *statuses,
            "",
            "| before | after | trigger |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )
    out = Path(__file__).parent / "_generated" / "default_lifecycle.md"
    out.parent.mkdir(exist_ok=True)
    if not out.exists() or out.read_text(encoding="utf-8") != text:
        out.write_text(text, encoding="utf-8")


_render_default_lifecycle()
