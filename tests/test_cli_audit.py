"""``loanstate audit``, run as the real console script in a subprocess: reports, inputs, options, errors."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from test_cli import BROKEN, one_line_error, run

from loanstate import default_machine
from loanstate._events import TOP_TIMEZONE


def history_records(loans: int) -> list[dict[str, str]]:
    """Legal, interleaved changes of ``loans`` loans (non-ASCII customer ids, offsets in UTC+8)."""
    machine = default_machine()
    path = ["OVERDUE", "NEW", "SETTLED"]
    records = []
    for step, after in enumerate(path):
        for n in range(loans):
            before = machine.initial if step == 0 else path[step - 1]
            at = datetime(2024, 1, 1 + step, 9, n, tzinfo=TOP_TIMEZONE)
            event = machine.change(
                loan_apply_no=f"FI{n:04d}",
                before=before,
                after=after,
                at=at,
                customer_id="客户",
                request_id=f"R{step}N{n:04d}",
            )
            records.append(event.to_dict())
    return records


def test_audit_reports_findings_in_text_and_json(tmp_path: Path) -> None:
    """Planted mistakes: counts and findings with line numbers, exit 1; --format json lists every one."""
    records = history_records(4)
    records[5] = {**records[5], "after_status": "LATE"}  # unknown status, line 6
    records[9] = {**records[9], "before_status": "OVERDUE"}  # OVERDUE -> SETTLED from NEW: chain break, line 10
    records.append({**records[0]})  # duplicate request_id (and a chain break), line 13
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    text = run("audit", path)
    assert text.returncode == 1, text.stderr
    assert "line 6: unknown-status:" in text.stdout
    assert "line 13: duplicate-request-id: request_id" in text.stdout
    result = run("audit", path, "--format", "json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    kinds = {(f["line"], f["kind"]) for f in data["findings"]}
    assert {(6, "unknown-status"), (10, "chain-break"), (13, "duplicate-request-id")} <= kinds
    assert data["summary"]["records"] == 13


def test_audit_clean_csv_in_gbk_exits_zero(tmp_path: Path) -> None:
    """A clean GBK CSV history with CRLF audits clean with ``--encoding gbk`` (and is refused as UTF-8)."""
    records = history_records(5)
    header = "loan_apply_no,before_status,after_status,change_time,request_id,customer_id"
    rows = [",".join(r[k] for k in header.split(",")) for r in records]
    path = tmp_path / "history.csv"
    path.write_bytes("\r\n".join([header, *rows, ""]).encode("gbk"))
    result = run("audit", path, "--encoding", "gbk")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no findings" in result.stdout
    assert "--encoding gbk" in one_line_error(run("audit", path))


def test_audit_bad_inputs_are_one_line_exit_two(tmp_path: Path) -> None:
    """Directory, binary, a 2 GB binary (refused at once), bad --machine: one line each, exit 2."""
    huge = tmp_path / "huge.jsonl"
    with huge.open("wb") as f:
        f.truncate(2 * 1024**3)
    assert "binary" in one_line_error(run("audit", huge, timeout=30))
    assert "directory" in one_line_error(run("audit", tmp_path))
    broken = tmp_path / "broken.toml"
    broken.write_text(BROKEN, encoding="utf-8")
    history = tmp_path / "h.jsonl"
    history.write_text("", encoding="utf-8")
    assert "invalid lifecycle definition" in one_line_error(run("audit", history, "--machine", broken))
    usage = run("audit", history, "--format", "yaml")
    assert usage.returncode == 2
    assert "Traceback" not in usage.stderr


def test_audit_progress_bar_goes_to_stderr(tmp_path: Path) -> None:
    """``--progress`` draws on stderr and leaves stdout to the report."""
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in history_records(3)), encoding="utf-8")
    result = run("audit", path, "--progress", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["records"] == 9


def test_audit_limit_must_not_be_negative(tmp_path: Path) -> None:
    """``--limit -1`` is a usage error (exit 2), not a report that silently lists nothing."""
    path = tmp_path / "history.jsonl"
    path.write_text(json.dumps(history_records(1)[0]) + "\n", encoding="utf-8")
    result = run("audit", path, "--limit", "-1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_user_text_in_a_path_is_never_read_as_markup(tmp_path: Path) -> None:
    """Brackets in a history's path (``[/b]``) are printed as they are, not taken for rich markup."""
    folder = tmp_path / "exports[" / "b]"
    folder.mkdir(parents=True)
    history = folder / "history.jsonl"  # its path holds "[/b]"
    history.write_text("".join(json.dumps(r) + "\n" for r in history_records(2)), encoding="utf-8")
    audited = run("audit", history)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert f"{history}: 6 records, 2 loans" in audited.stdout


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """A FIFO (no writer) is refused in one line, exit 2: nothing blocks waiting for it."""
    fifo = tmp_path / "history.jsonl"
    os.mkfifo(fifo)
    assert "not a regular file" in one_line_error(run("audit", fifo, timeout=30))


def test_a_device_is_refused_at_once() -> None:
    """``/dev/zero`` is refused in one line, exit 2, before a byte is read."""
    assert "not a regular file" in one_line_error(run("audit", "/dev/zero", timeout=30))


@pytest.mark.parametrize(
    ("encoding", "says"), [("rot13", "'rot13' is not a text encoding"), ("utf-16", "not supported")]
)
def test_encoding_must_be_an_ascii_based_text_codec(tmp_path: Path, encoding: str, says: str) -> None:
    """``--encoding rot13`` (a codec, not a text encoding) or UTF-16 is a usage error naming it, exit 2."""
    path = tmp_path / "history.jsonl"
    path.write_text(json.dumps(history_records(1)[0]) + "\n", encoding="utf-8")
    result = run("audit", path, "--encoding", encoding)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--encoding" in result.stderr
    assert says in result.stderr
    assert "internal error" not in result.stderr


def test_a_deeply_nested_line_is_one_malformed_finding(tmp_path: Path) -> None:
    """A 100,000-deep JSON line is a malformed finding (exit 1), not an internal error; the next line is read."""
    records = history_records(1)
    path = tmp_path / "history.jsonl"
    deep = "[" * 100_000 + "]" * 100_000
    path.write_text("\n".join([json.dumps(records[0]), deep, json.dumps(records[1])]) + "\n", encoding="utf-8")
    result = run("audit", path, "--format", "json")
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert [(f["line"], f["kind"]) for f in data["findings"]] == [(2, "malformed")]
    assert "nested too deeply" in data["findings"][0]["message"]
    assert data["summary"]["records"] == 3


def test_the_apis_own_time_form_audits_clean(tmp_path: Path) -> None:
    """A file of ``to_top_param()`` lines (change_time ``yyyy-MM-dd HH:mm:ss``, GMT+8) audits clean, exit 0."""
    machine = default_machine()
    start = datetime(2024, 1, 1, 9, tzinfo=TOP_TIMEZONE)
    lines = []
    for n in range(3):
        first = machine.change(loan_apply_no=f"FI{n}", before="NEW", after="OVERDUE", at=start, request_id=f"a{n}")
        later = start + timedelta(hours=1)
        second = machine.change(loan_apply_no=f"FI{n}", before="OVERDUE", after="NEW", at=later, request_id=f"b{n}")
        lines += [first.to_top_param(), second.to_top_param()]
    path = tmp_path / "top.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run("audit", path, "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["summary"] == {
        "source": str(path),
        "records": 6,
        "loans": 3,
        "findings": 0,
        "counts": dict.fromkeys(json.loads(result.stdout)["summary"]["counts"], 0),
    }


def test_other_offset_less_times_need_assume_offset(tmp_path: Path) -> None:
    """``2024-01-01T09:00:00`` is malformed until ``--assume-offset +08:00`` names its zone; a bad offset is usage."""
    record = {**history_records(1)[0], "change_time": "2024-01-01T09:00:00"}
    path = tmp_path / "history.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    refused = run("audit", path)
    assert refused.returncode == 1
    assert "has no UTC offset" in refused.stdout
    assert run("audit", path, "--assume-offset", "+08:00").returncode == 0
    for bad in ("+8", "+\u0660\u0668:00", "+24:00"):
        usage = run("audit", path, "--assume-offset", bad)
        assert usage.returncode == 2, bad
        assert "--assume-offset" in usage.stderr


def test_an_offset_in_arabic_indic_digits_is_malformed(tmp_path: Path) -> None:
    """``+\u0660\u0668:\u0660\u0660`` is not an offset (ASCII digits only, as from_dict says): malformed."""
    record = {**history_records(1)[0], "change_time": "2024-01-01T09:00:00+\u0660\u0668:\u0660\u0660"}
    path = tmp_path / "history.jsonl"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    result = run("audit", path, "--format", "json")
    assert result.returncode == 1
    (finding,) = json.loads(result.stdout)["findings"]
    assert finding["kind"] == "malformed"
    assert "change_time" in finding["message"]
