"""Every Python example in the README and the docs runs as a test (Sybil)."""

from __future__ import annotations

from sybil import Sybil
from sybil.parsers.markdown import ClearNamespaceParser, PythonCodeBlockParser, SkipParser

pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser(), ClearNamespaceParser()],
    patterns=["README.md", "*.md"],
    excludes=["CHANGELOG.md", "_build/*"],
).pytest()
