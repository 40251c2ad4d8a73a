"""Reading lifecycle definitions and reporting every problem in them, with where it is."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from loanstate import InvalidDefinition, LoanMachine, Problem

BROKEN_TOML = """\
[lifecycle]
name = "broken"
initial = "NEW"
terminal = ["INVALID"]
colour = "red"

[statuses]
NEW = "in force"
OVERDUE = "past due"
SETTLED = "paid off"
INVALID = "cancelled"
"bad name" = "spaces are not allowed"

[[transitions]]
before = "NEW"
after = "OVERDU"

[[transitions]]
before = "NEW"
after = "NEW"

[[transitions]]
before = ["NEW", "OVERDUE"]
after = "SETTLED"
trigger = "settle"

[[transitions]]
before = "NEW"
after = "SETTLED"
aftr = "x"

[[transitions]]
before = "INVALID"
after = "NEW"
"""


def _problems(path: Path) -> list[Problem]:
    with pytest.raises(InvalidDefinition) as info:
        LoanMachine.from_file(path)
    assert info.value.problems == tuple(LoanMachine.problems_in_file(path))
    return list(info.value.problems)


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    """One load reports all problems at once, each with file, line and place."""
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN_TOML, encoding="utf-8")
    found = {(p.code, p.where, p.line) for p in _problems(path)}
    assert found == {
        ("unknown-key", "lifecycle.colour", 5),
        ("bad-name", "statuses.bad name", 12),
        ("unknown-status", "transitions[1].after", 16),
        ("self-loop", "transitions[2]", 18),
        ("duplicate-pair", "transitions[4]", 27),
        ("unknown-key", "transitions[4].aftr", 30),
        ("terminal-exit", "statuses.INVALID", 11),
        ("unreachable", "statuses.bad name", 12),
        ("unreachable", "statuses.INVALID", 11),
        ("unreachable", "statuses.OVERDUE", 9),
        ("dead-end", "statuses.SETTLED", 10),
        ("dead-end", "statuses.bad name", 12),
    }


def test_problem_text_names_file_line_and_value(tmp_path: Path) -> None:
    """A problem reads as 'file:line: place: message' and names the offending value."""
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN_TOML, encoding="utf-8")
    text = {str(p) for p in _problems(path)}
    assert f"{path}:16: transitions[1].after: unknown status 'OVERDU' in 'after'" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x01binary", "binary file"),
        (b"\xff\xfe[lifecycle]", "not UTF-8"),
        (b"[lifecycle\ninitial =", "not valid TOML"),
    ],
)
def test_unreadable_files_are_one_clear_problem(tmp_path: Path, content: bytes, message: str) -> None:
    """Binary, non-UTF-8 and malformed TOML files are each one 'unreadable' problem."""
    path = tmp_path / "x.toml"
    path.write_bytes(content)
    problems = _problems(path)
    assert [p.code for p in problems] == ["unreadable"]
    assert message in problems[0].message
    assert problems[0].source == str(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    """A missing file and a directory are reported, not raised as OSError."""
    assert "no such file" in _problems(tmp_path / "absent.toml")[0].message
    assert "is a directory" in _problems(tmp_path)[0].message


def test_impossible_paths_are_one_clear_problem() -> None:
    """A path with a NUL character or a value that is no path is an 'unreadable' problem, not a ValueError/TypeError."""
    for path in ("life\x00cycle.toml", 123):
        problems = LoanMachine.problems_in_file(path)  # type: ignore[arg-type]
        assert [p.code for p in problems] == ["unreadable"]
        with pytest.raises(InvalidDefinition, match=r"NUL|not a file path"):
            LoanMachine.from_file(path)  # type: ignore[arg-type]


def test_huge_file_is_refused_before_reading(tmp_path: Path) -> None:
    """A file over 1 MiB is refused from its size alone."""
    path = tmp_path / "big.toml"
    with path.open("wb") as handle:
        handle.seek(2 * 1024 * 1024)
        handle.write(b"\n")
    assert "at most 1048576 bytes" in _problems(path)[0].message


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    """A definition saved with a UTF-8 byte order mark loads."""
    path = tmp_path / "bom.toml"
    path.write_text(
        '[lifecycle]\ninitial = "A"\nterminal = ["B"]\n[statuses]\nA = "甲"\nB = "乙"\n'
        '[[transitions]]\nbefore = "A"\nafter = "B"\n',
        encoding="utf-8-sig",
    )
    assert LoanMachine.from_file(path).descriptions == {"A": "甲", "B": "乙"}


@pytest.mark.parametrize(
    ("data", "codes"),
    [
        ({}, ["bad-initial", "blank-name"]),
        ({"lifecycle": {"initial": "X"}, "statuses": {"A": ""}}, ["bad-initial", "dead-end"]),
        ({"lifecycle": "no", "statuses": {"A": ""}}, ["bad-value", "bad-initial", "dead-end"]),
        (
            {"lifecycle": {"initial": "A", "terminal": "B"}, "statuses": ["A", "B"], "transitions": {"x": 1}},
            ["bad-value", "dead-end", "unreachable"],
        ),
        (
            {
                "lifecycle": {"initial": "A", "terminal": ["C"]},
                "statuses": {"A": "", "B": "", "C": ""},
                "transitions": [
                    {"before": "A", "after": "B", "trigger": "go"},
                    {"before": "A", "after": "C", "trigger": "go"},
                    {"before": "B", "after": "C", "trigger": "bad name"},
                ],
            },
            ["ambiguous-trigger", "bad-name"],
        ),
        (
            {
                "lifecycle": {"initial": "A", "terminal": ["B", " "]},
                "statuses": {"A": "", "B": ""},
                "transitions": [{"before": [], "after": "B"}, {"before": "A", "after": "B"}, {"after": "A"}],
            },
            ["blank-name", "blank-name", "blank-name"],
        ),
    ],
)
def test_mapping_problems(data: dict[str, object], codes: list[str]) -> None:
    """Shape and logic problems in a mapping are all reported, by code."""
    assert sorted(p.code for p in LoanMachine.problems_in_dict(data)) == sorted(codes)
    with pytest.raises(InvalidDefinition):
        LoanMachine.from_dict(data)


def test_invalid_definition_message_lists_all_problems() -> None:
    """The exception's message counts the problems and lists each on its own line."""
    with pytest.raises(InvalidDefinition) as info:
        LoanMachine.from_dict({"lifecycle": {"initial": "A"}, "statuses": {"A": "", "B": ""}})
    text = str(info.value)
    assert text.startswith("invalid lifecycle definition: 3 problems\n")
    assert "  - statuses.B: status 'B' cannot be reached from 'A'" in text


def _problems_soon(path: object) -> list[Problem]:
    """problems_in_file(path), in a thread: a regression that blocks fails this test instead of hanging the suite."""
    found: list[list[Problem]] = []
    worker = threading.Thread(target=lambda: found.append(LoanMachine.problems_in_file(path)), daemon=True)  # type: ignore[arg-type]
    worker.start()
    worker.join(timeout=60)
    assert found, f"reading {path} blocked"
    return found[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX feature")
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO with no writer is refused as not a regular file, by check and from_file alike, without blocking."""
    path = tmp_path / "lifecycle.toml"
    os.mkfifo(path)
    (problem,) = _problems_soon(path)
    assert problem.code == "unreadable"
    assert "not a regular file" in problem.message
    with pytest.raises(InvalidDefinition, match="not a regular file"):
        LoanMachine.from_file(path)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_dev_zero_is_refused_without_reading() -> None:
    """/dev/zero (endless, reporting size 0) is refused as not a regular file instead of read until memory runs out."""
    (problem,) = _problems_soon("/dev/zero")
    assert problem.code == "unreadable"
    assert "not a regular file" in problem.message


@pytest.mark.parametrize(
    ("depth", "message"),
    [(20, "nests"), (3000, "nests too deeply")],
    ids=["past-the-limit", "past-python-recursion"],
)
def test_deep_nesting_is_one_clear_problem(tmp_path: Path, depth: int, message: str) -> None:
    """TOML nested beyond a sane depth is an 'unreadable' problem, never a RecursionError."""
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * depth + "]" * depth + "\n", encoding="utf-8")
    (problem,) = _problems_soon(path)
    assert problem.code == "unreadable"
    assert message in problem.message
    assert len(problem.message) < 200


def test_a_sane_depth_is_read(tmp_path: Path) -> None:
    """Nesting within the limit is read as usual (and judged by the schema)."""
    path = tmp_path / "nested.toml"
    path.write_text('[lifecycle]\ninitial = "A"\nterminal = [["A"]]\n[statuses]\nA = ""\n', encoding="utf-8")
    assert sorted(p.code for p in LoanMachine.problems_in_file(path)) == ["bad-value", "dead-end"]  # A is not terminal


@pytest.mark.parametrize(
    "path",
    [b"/nonexistent/\xff.toml", "x" * 10_000, Path("/nonexistent") / ("y" * 300)],
    ids=["bytes", "too-long", "long-component"],
)
def test_odd_paths_are_one_clear_short_problem(path: object) -> None:
    """Odd paths are one 'unreadable' problem whose text stays short."""
    (problem,) = LoanMachine.problems_in_file(path)  # type: ignore[arg-type]
    assert problem.code == "unreadable"
    assert len(str(problem)) < 500


def test_implicit_trigger_clash_in_a_file_is_reported_with_its_line(tmp_path: Path) -> None:
    """A trigger named like another transition's implicit to_<after>, leading elsewhere, is ambiguous, with its line."""
    path = tmp_path / "clash.toml"
    path.write_text(
        '[lifecycle]\ninitial = "A"\nterminal = ["B", "C"]\n[statuses]\nA = ""\nB = ""\nC = ""\n'
        '[[transitions]]\nbefore = "A"\nafter = "B"\n'
        '[[transitions]]\nbefore = "A"\nafter = "C"\ntrigger = "to_B"\n',
        encoding="utf-8",
    )
    (problem,) = LoanMachine.problems_in_file(path)
    assert (problem.code, problem.where, problem.line) == ("ambiguous-trigger", "transitions[2]", 11)
