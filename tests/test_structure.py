"""The package's imports run one way: no cycle, no upward edge, no product code on the test kit.

The layers are ARCHITECTURE.md's: errors at the bottom, then the field rules, the
definition and events, its checks and diagrams, the machine, the protocol
(``top``), the adapters and the file readers (the store's import reads with the
audit's readers), the store, the dispatcher, and the entry points (cli, console,
testing) at the top. A
module may import from its own package and from lower layers only. Every import
counts, including those under ``if TYPE_CHECKING:`` and inside functions: a
type-only cycle is still a cycle a reader must hold in their head.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "loanstate"

# Lower number, lower layer. Keys are the first component under loanstate
# ("_events" for loanstate/_events.py, "store" for everything in loanstate/store/).
LAYERS: dict[str, int] = {
    "_errors": 0,
    "_validate": 1,
    "_definition": 2,
    "_events": 2,
    "_checks": 3,
    "_diagrams": 3,
    "_machine": 4,
    "lifecycles": 4,
    "top": 5,
    "audit": 6,
    "fake": 6,
    "notifiers": 6,
    "store": 7,
    "dispatch": 8,
    "console": 9,
    "testing": 9,
    "cli": 10,
    "__main__": 11,
    "__init__": 11,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> Iterator[str]:
    """Every loanstate module ``path`` imports, wherever the import statement stands."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            # `from a.b import c` imports the module a.b.c when there is one, else a name of a.b.
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names]
        else:
            continue
        for written in targets:
            target = written
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("loanstate") and target != name:
                yield target


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set(imported(path, name, known)) for name, path in found.items()}


def layer_key(name: str) -> str:
    parts = name.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_every_module_has_a_layer() -> None:
    """Each top-level module or package of loanstate is placed in a layer (a new one must be placed)."""
    unplaced = sorted({layer_key(name) for name in modules()} - set(LAYERS))
    assert not unplaced, f"place these in LAYERS: {unplaced}"


def test_no_import_cycle() -> None:
    """No module reaches itself through its imports, type-only imports included."""
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    # A package's __init__ re-exporting its own submodules is not a cycle of ideas.
    real = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]
    assert not real, "import cycles:\n" + "\n".join(" -> ".join(c) for c in real)


def test_imports_run_down_the_layers() -> None:
    """A module imports only from its own package and from lower layers (the root package is the top)."""
    upward = []
    for name, targets in graph().items():
        here = layer_key(name)
        for target in targets:
            there = layer_key(target)
            if there != here and LAYERS.get(there, 99) >= LAYERS.get(here, -1):
                upward.append(f"{name} -> {target}")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize(
    ("module_prefix", "forbidden"),
    [
        ("loanstate._errors", ("loanstate.",)),
        ("loanstate.top", ("loanstate.notifiers", "loanstate.store", "loanstate.dispatch")),
    ],
)
def test_named_rules(module_prefix: str, forbidden: tuple[str, ...]) -> None:
    """The issue's named rules: _errors imports nothing of loanstate; top/ no notifier, store or dispatcher."""
    bad = [
        f"{name} -> {target}"
        for name, targets in graph().items()
        if name == module_prefix or name.startswith(module_prefix + ".")
        for target in targets
        if target.startswith(forbidden)
    ]
    assert not bad, bad


def test_product_code_never_imports_the_test_kit() -> None:
    """Only loanstate.testing itself imports loanstate.testing (Hypothesis stays a test-only import)."""
    bad = [
        f"{name} -> {target}"
        for name, targets in graph().items()
        if not name.startswith("loanstate.testing")
        for target in targets
        if target.startswith("loanstate.testing")
    ]
    assert not bad, bad


def test_the_graph_sees_imports() -> None:
    """The walker is not blind: it finds known edges, relative and type-only forms included."""
    edges = graph()
    assert "loanstate._errors" in edges["loanstate._events"]
    assert "loanstate.fake._gateway" in edges["loanstate.fake"]
