"""The static checks and the docs build, run as tests so one runner gives one verdict."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False, timeout=600)


def test_ruff_lint() -> None:
    """ruff finds nothing to complain about."""
    result = run(sys.executable, "-m", "ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    """Every file is formatted the way ruff formats it."""
    result = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict() -> None:
    """The package, its tests and benchmarks type-check under mypy --strict."""
    result = run(sys.executable, "-m", "mypy", "--strict")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, subprocess.CompletedProcess[str]]]:
    """The docs, built once for this module's tests (Graphviz draws the diagrams at build time)."""
    if shutil.which("dot") is None:
        reason = "Graphviz's `dot` is not installed (Debian: apt-get install graphviz; scripts/test does it as root)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("docs-html")
    result = run(sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", str(out))
    yield out, result
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.slow
def test_docs_build(built_docs: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """The Sphinx docs build with warnings as errors."""
    out, result = built_docs
    if not (ROOT / "docs" / "conf.py").exists():
        pytest.fail("docs/conf.py is missing")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "index.html").exists()


class _AssetReferences(HTMLParser):
    """Collects every URL an HTML page makes the browser load (not the links a reader may follow)."""

    LOADS: ClassVar[dict[str, tuple[str, ...]]] = {
        "script": ("src",),
        "link": ("href",),
        "img": ("src", "srcset"),
        "object": ("data",),
        "iframe": ("src",),
        "embed": ("src",),
        "source": ("src", "srcset"),
        "audio": ("src",),
        "video": ("src", "poster"),
        "image": ("href", "xlink:href"),
        "use": ("href", "xlink:href"),
    }

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = self.LOADS.get(tag, ())
        self.urls += [value for name, value in attrs if name in wanted and value]
        self.urls += [m for name, value in attrs if name == "style" and value for m in _CSS_URL.findall(value)]


_CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""")
_JS_LOAD = re.compile(r"""(?:\bimport\s*\(?\s*|\bfrom\s+|fetch\(\s*|\.src\s*=\s*)['"`]((?:https?:)?//[^'"`]+)""")
_OTHER_HOST = re.compile(r"^(?:https?:)?//(?!(?:127\.0\.0\.1|localhost)(?:[:/]|$))", re.IGNORECASE)


@pytest.mark.slow
def test_built_docs_load_nothing_from_another_host(built_docs: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """No page, stylesheet, script or image of the built docs loads anything from another host (air-gapped banks)."""
    out, result = built_docs
    assert result.returncode == 0, result.stdout + result.stderr
    remote: list[str] = []
    for path in sorted(out.rglob("*")):
        if path.suffix not in {".html", ".css", ".js", ".mjs", ".svg"}:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix in {".html", ".svg"}:
            parser = _AssetReferences()
            parser.feed(text)
            urls = parser.urls
        else:
            urls = []
        if path.suffix in {".css", ".html"}:
            urls += _CSS_URL.findall(text)
        if path.suffix in {".js", ".mjs", ".html"}:
            urls += _JS_LOAD.findall(text)
        remote += [f"{path.relative_to(out)}: {url}" for url in urls if _OTHER_HOST.match(url.strip())]
    assert not remote, "the built docs load from other hosts:\n" + "\n".join(remote)
    # The lifecycle diagram is drawn at build time, so it is there without any script.
    assert list(out.glob("_images/graphviz-*.svg")), "no diagram was drawn into the docs"


def test_asset_check_sees_remote_loads() -> None:
    """The checker above is not blind: it finds a CDN script, a remote stylesheet, a CSS url() and a JS import."""
    parser = _AssetReferences()
    parser.feed('<script src="https://cdn.example/m.js"></script><link rel="stylesheet" href="//fonts.example/x.css">')
    parser.feed('<a href="https://docs.example/">a link a reader may follow</a><img src="_static/local.png">')
    assert [u for u in parser.urls if _OTHER_HOST.match(u)] == ["https://cdn.example/m.js", "//fonts.example/x.css"]
    assert _CSS_URL.findall("a{background:url('https://x.example/a.png')} @import 'http://y.example/b.css';") == [
        "https://x.example/a.png",
        "http://y.example/b.css",
    ]
    assert _JS_LOAD.findall('import m from "https://cdn.example/mermaid.mjs"; fetch("http://127.0.0.1/x")') == [
        "https://cdn.example/mermaid.mjs",
        "http://127.0.0.1/x",
    ]
    assert not _OTHER_HOST.match("http://127.0.0.1/x")
