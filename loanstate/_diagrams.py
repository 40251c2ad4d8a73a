"""A lifecycle drawn as text: Mermaid ``stateDiagram-v2`` and Graphviz ``digraph``.

Both are deterministic (the same definition gives the same text) and safe to
print: descriptions and names are the user's free text, so every control or
other non-printable character in them (an ESC that would steer a terminal, a
NUL, a line break) becomes a space before it reaches the diagram.
"""

from __future__ import annotations

from collections.abc import Iterable

from loanstate._definition import Definition

__all__ = ["printable", "to_dot", "to_mermaid"]


def printable(text: str) -> str:
    """``text`` with every character :meth:`str.isprintable` refuses replaced by a space."""
    return text if text.isprintable() else "".join(c if c.isprintable() else " " for c in text)


def _edges(d: Definition) -> list[tuple[str, str, str | None]]:
    return [(before, t.after, t.trigger) for t in d.transitions for before in t.before]


def to_mermaid(d: Definition) -> str:
    """The lifecycle as a Mermaid ``stateDiagram-v2``."""
    ids = _mermaid_ids(d.statuses)
    out = ["stateDiagram-v2"]
    for status, description in d.statuses.items():
        if description:
            out.append(f"    {ids[status]} : {status}: {_mermaid_text(description)}")
        elif ids[status] != status:
            out.append(f"    {ids[status]} : {status}")
    out.append(f"    [*] --> {ids[d.initial]}")
    for before, after, trigger in _edges(d):
        label = f" : {trigger}" if trigger else ""
        out.append(f"    {ids[before]} --> {ids[after]}{label}")
    for status in d.terminal:
        out.append(f"    {ids[status]} --> [*]")
    return "\n".join(out) + "\n"


def to_dot(d: Definition) -> str:
    """The lifecycle as a Graphviz ``digraph``: a start point, and a double border on terminal statuses."""
    out = [f"digraph {_dot_string(printable(d.name))} {{", "    rankdir=LR;", "    node [shape=box, style=rounded];"]
    out.append('    "__start__" [shape=point, label=""];')
    terminal = set(d.terminal)
    for status, description in d.statuses.items():
        shape = ", peripheries=2" if status in terminal else ""
        # The description is raw text; the "\\n" between is dot's line break.
        label = f"{status}\\n{_dot_text(description)}" if description else status
        out.append(f"    {_dot_string(status)} [label={_dot_string(label, escaped=True)}{shape}];")
    out.append(f'    "__start__" -> {_dot_string(d.initial)};')
    for before, after, trigger in _edges(d):
        label = f" [label={_dot_string(trigger)}]" if trigger else ""
        out.append(f"    {_dot_string(before)} -> {_dot_string(after)}{label};")
    out.append("}")
    return "\n".join(out) + "\n"


def _mermaid_ids(statuses: Iterable[str]) -> dict[str, str]:
    """A distinct Mermaid id per status: '.' and '-' become '_', with a suffix where two would meet."""
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for status in statuses:
        base = candidate = status.replace(".", "_").replace("-", "_")
        n = 1
        while candidate in taken:
            n += 1
            candidate = f"{base}_{n}"
        ids[status] = candidate
        taken.add(candidate)
    return ids


def _dot_text(text: str) -> str:
    # Quotes are escaped by _dot_string(escaped=True); a backslash must be doubled first.
    return printable(text).replace("\\", "\\\\")


def _mermaid_text(text: str) -> str:
    return printable(text).replace(":", "∶").replace(";", ",")


def _dot_string(text: str, *, escaped: bool = False) -> str:
    body = text.replace('"', '\\"') if escaped else text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{body}"'
