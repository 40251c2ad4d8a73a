"""The audit engine (``loanstate.audit``), in process: properties against planted histories, then examples."""

from __future__ import annotations

import codecs
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loanstate import (
    AuditFinding,
    HistoryAudit,
    InvalidConfiguration,
    InvalidEvent,
    LoanChangeEvent,
    LoanMachine,
    UnreadableInput,
    default_machine,
)
from loanstate.audit import MAX_RECORD_BYTES
from loanstate.testing import History, change_events, histories

CLEAN = histories(loans=(1, 12))
PLANTED = histories(loans=(1, 12), anomalies=True)


def found(audit: HistoryAudit) -> list[AuditFinding]:
    """Run the audit to the end and return its findings."""
    return list(audit.findings())


def planted(history: History, offset: int) -> set[tuple[int, str]]:
    """(line, kind) of every planted anomaly, when record ``i`` sits on line ``i + offset``."""
    return {(a.index + offset, a.kind) for a in history.anomalies}


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A private directory (tmp_path does not mix with Hypothesis' repeated examples)."""
    with tempfile.TemporaryDirectory(prefix="loanstate-audit-") as name:
        yield Path(name)


def write(directory: Path, name: str, data: str | bytes) -> Path:
    path = directory / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# -- properties ---------------------------------------------------------------------


@given(CLEAN)
def test_clean_history_has_no_findings(history: History) -> None:
    """Interleaved legal lifecycles produce no finding, and the summary counts records and loans."""
    audit = HistoryAudit.of_records(history.records)
    assert found(audit) == []
    assert audit.summary is not None
    assert audit.summary.clean
    assert audit.summary.records == len(history.records)
    assert audit.summary.loans == len(history.loans())


@given(PLANTED)
def test_every_planted_anomaly_is_found_exactly(history: History) -> None:
    """Each planted record is reported once, with its kind and position, and nothing else is."""
    audit = HistoryAudit.of_records(history.records)
    findings = found(audit)
    assert {(f.line, f.kind) for f in findings} == planted(history, 1)
    assert len(findings) == len(history.anomalies)
    assert audit.summary is not None
    assert audit.summary.findings == len(findings)


@given(history=PLANTED, crlf=st.booleans(), bom=st.booleans())
def test_jsonl_file_gives_the_same_findings_with_line_numbers(history: History, crlf: bool, bom: bool) -> None:
    """A JSON Lines file (CRLF or not, BOM or not) gives the planted findings at record index + 1."""
    text = history.to_jsonl()
    if crlf:
        text = text.replace("\n", "\r\n")
    data = (codecs.BOM_UTF8 if bom else b"") + text.encode("utf-8")
    with tempfile.TemporaryDirectory() as name:
        path = write(Path(name), "history.jsonl", data)
        findings = found(HistoryAudit.of_file(path))
    assert {(f.line, f.kind) for f in findings} == planted(history, 1)


@given(history=PLANTED, encoding=st.sampled_from(["utf-8", "gbk"]))
def test_csv_file_gives_the_same_findings_with_line_numbers(history: History, encoding: str) -> None:
    """A CSV file (UTF-8 or GBK) gives the planted findings at record index + 2 (after the header)."""
    text = history.to_csv()
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        data = text.encode("utf-8")
        encoding = "utf-8"
    with tempfile.TemporaryDirectory() as name:
        path = write(Path(name), "history.csv", data)
        findings = found(HistoryAudit.of_file(path, encoding=encoding))
    # A CSV cell cannot be absent and empty at once, nor hold a non-string: the
    # planted kinds still come out, on the same lines.
    assert {(f.line, f.kind) for f in findings} == planted(history, 2)


@given(histories(loans=(10, 40), anomalies=True))
def test_bloom_false_positives_never_reach_the_report(history: History) -> None:
    """With a tiny filter nearly every request_id is a candidate; the confirming pass keeps only real duplicates."""
    audit = HistoryAudit.of_records(history.records, bloom_bits=1024)
    assert {(f.line, f.kind) for f in found(audit)} == planted(history, 1)


@given(histories(loans=(10, 40), anomalies=True, kinds=("duplicate-request-id",)))
def test_tiny_filter_on_a_file_confirms_by_search_or_by_rereading(history: History) -> None:
    """Both confirming strategies (byte search for few candidates, a full re-read for many) agree."""
    with tempfile.TemporaryDirectory() as name:
        path = write(Path(name), "history.jsonl", history.to_jsonl())
        small = found(HistoryAudit.of_file(path, bloom_bits=1024))
        large = found(HistoryAudit.of_file(path))
    expected = planted(history, 1)
    assert {(f.line, f.kind) for f in small} == expected
    assert {(f.line, f.kind) for f in large} == expected


# -- examples a reader should see ----------------------------------------------------

RECORD = {
    "loan_apply_no": "FI1",
    "before_status": "NEW",
    "after_status": "OVERDUE",
    "change_time": "2024-01-01T08:00:00+08:00",
    "request_id": "r1",
}


def test_every_kind_of_finding_in_one_small_file(scratch: Path) -> None:
    """One file, every kind: the report names each, in file order, duplicates confirmed last."""
    lines = [
        json.dumps(RECORD),
        "{not json",
        json.dumps({**RECORD, "before_status": "OVERDUE", "after_status": "SETTLED", "request_id": "r2"}),
        json.dumps({**RECORD, "loan_apply_no": "FI2", "after_status": "LATE", "request_id": "r3"}),
        json.dumps({**RECORD, "loan_apply_no": "FI3", "before_status": "INVALID", "after_status": "NEW"}),
        json.dumps({**RECORD, "before_status": "NEW", "change_time": "2023-01-01T00:00:00Z", "request_id": "r4"}),
    ]
    path = write(scratch, "history.jsonl", "\n".join(lines) + "\n\n")
    audit = HistoryAudit.of_file(path)
    findings = found(audit)
    assert [(f.line, f.kind) for f in findings] == [
        (2, "malformed"),
        (4, "unknown-status"),
        (5, "illegal-pair"),
        (6, "chain-break"),
        (6, "time-backwards"),
        (5, "duplicate-request-id"),
    ]
    assert "already used at line 1" in findings[-1].message
    assert audit.summary is not None
    assert audit.summary.records == 6
    assert audit.summary.loans == 3


def test_malformed_record_names_every_bad_field() -> None:
    """A record with several bad fields gets one finding that names each of them."""
    record = {"loan_apply_no": " ", "before_status": "NEW", "after_status": "OVERDUE", "change_time": "2024-01-01"}
    (finding,) = found(HistoryAudit.of_records([record]))
    assert finding.kind == "malformed"
    for field in ("loan_apply_no", "change_time", "request_id"):
        assert field in finding.message


def test_other_lifecycle_decides_what_is_legal() -> None:
    """With another machine, its statuses and pairs are the yardstick."""
    machine = LoanMachine.from_dict(
        {
            "lifecycle": {"initial": "OPEN", "terminal": ["CLOSED"]},
            "statuses": {"OPEN": "open", "CLOSED": "closed"},
            "transitions": [{"before": "OPEN", "after": "CLOSED"}],
        }
    )
    records = [{**RECORD, "before_status": "OPEN", "after_status": "CLOSED"}, {**RECORD, "request_id": "r9"}]
    findings = found(HistoryAudit.of_records(records, machine=machine))
    assert [(f.line, f.kind) for f in findings] == [(2, "unknown-status")]


def test_gbk_csv_with_quoted_newline_keeps_line_numbers(scratch: Path) -> None:
    """GBK input is read with its encoding; a quoted newline (in a column the audit ignores) shifts nothing."""
    header = "loan_apply_no,before_status,after_status,change_time,request_id,customer_id,note\r\n"
    rows = [
        'FI1,NEW,OVERDUE,2024-01-01T08:00:00+08:00,r1,客户一,"逾期\n一天"\r\n',
        "FI1,OVERDUE,INVALID,2024-01-02T08:00:00+08:00,r2,,\r\n",
    ]
    path = write(scratch, "history.csv", (header + "".join(rows)).encode("gbk"))
    findings = found(HistoryAudit.of_file(path, encoding="gbk"))
    assert [(f.line, f.kind) for f in findings] == [(4, "illegal-pair")]
    # Read as UTF-8, the row with GBK text is malformed (a few stray bytes do not refuse the file;
    # many do: see test_audit_clean_csv_in_gbk_exits_zero in test_cli.py).
    as_utf8 = found(HistoryAudit.of_file(path))
    assert (2, "malformed") in {(f.line, f.kind) for f in as_utf8}


def test_overlong_line_is_malformed_and_never_held_whole(scratch: Path) -> None:
    """A line longer than the record limit is one malformed finding; the lines around it still count."""
    path = scratch / "history.jsonl"
    with path.open("wb") as f:
        f.write(json.dumps(RECORD).encode() + b"\n")
        f.write(b'{"x": "' + b"a" * (3 * MAX_RECORD_BYTES) + b'"}\n')
        f.write(json.dumps({**RECORD, "request_id": "r2", "before_status": "OVERDUE", "after_status": "NEW"}).encode())
    findings = found(HistoryAudit.of_file(path))
    assert [(f.line, f.kind) for f in findings] == [(2, "malformed")]
    assert "longer than" in findings[0].message


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "no such file"),
        ("dir", "is a directory"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        (b"", "empty"),
    ],
)
def test_unreadable_input_is_refused_before_any_work(scratch: Path, content: object, reason: str) -> None:
    """A missing file, a directory, a binary file or an empty CSV raise UnreadableInput naming the path."""
    path = scratch / "history.csv"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(UnreadableInput, match=reason) as caught:
        HistoryAudit.of_file(path)
    assert caught.value.path == str(path)


def test_huge_sparse_binary_file_is_recognised_from_its_first_chunk(scratch: Path) -> None:
    """A 2 GB binary file is refused from its first bytes, without reading it through."""
    path = scratch / "dump.jsonl"
    with path.open("wb") as f:
        f.truncate(2 * 1024**3)
    with pytest.raises(UnreadableInput, match="binary"):
        HistoryAudit.of_file(path)


def test_unknown_encoding_and_missing_csv_columns_are_refused(scratch: Path) -> None:
    """An unknown --encoding, a CSV header without the required fields or one csv cannot read are input errors."""
    path = write(scratch, "history.csv", "loan_apply_no,status\nFI1,NEW\n")
    with pytest.raises(UnreadableInput, match="unknown encoding"):
        HistoryAudit.of_file(path, encoding="no-such-codec")
    with pytest.raises(UnreadableInput, match="lacks before_status"):
        HistoryAudit.of_file(path)
    old_mac = write(scratch, "old-mac.csv", "loan_apply_no,before_status\rFI1,NEW\r")  # CR-only line ends
    with pytest.raises(UnreadableInput, match="no readable CSV header row"):
        HistoryAudit.of_file(old_mac)


def test_finding_and_summary_serialise_to_json() -> None:
    """Findings and the summary are JSON-ready dicts."""
    audit = HistoryAudit.of_records([RECORD, {**RECORD, "request_id": "r 2"}], machine=default_machine())
    (finding,) = found(audit)
    assert audit.summary is not None
    data = json.loads(json.dumps({"finding": finding.to_dict(), "summary": audit.summary.to_dict()}))
    assert data["finding"] == {"kind": "malformed", "line": 2, "message": finding.message, "loan_apply_no": "FI1"}
    assert data["summary"]["records"] == 2
    assert data["summary"]["counts"]["malformed"] == 1
    assert str(finding).startswith("line 2: malformed: request_id")


def test_times_compare_as_instants_across_offsets_and_z(scratch: Path) -> None:
    """Offsets (+08:00, +00:00, -05:30, Z) are compared as instants, whichever path reads them."""
    times = ["2024-01-01T10:00:00+08:00", "2024-01-01T03:00:00+00:00", "2023-12-31T22:00:00-05:30", "2024-01-01T01:00Z"]
    path_ = ["OVERDUE", "NEW", "OVERDUE", "NEW"]
    records = []
    before = "NEW"
    for n, (moment, after) in enumerate(zip(times, path_, strict=True)):
        records.append(
            {**RECORD, "before_status": before, "after_status": after, "change_time": moment, "request_id": f"t{n}"}
        )
        before = after
    path = write(scratch, "history.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    findings = found(HistoryAudit.of_file(path))
    # 03:00Z follows 02:00Z; 03:30Z follows 03:00Z; 01:00Z goes back.
    assert [(f.line, f.kind) for f in findings] == [(4, "time-backwards")]
    assert "(line 3) at 2023-12-31T22:00:00-05:30" in findings[0].message


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"])
def test_a_time_out_of_range_in_utc_is_malformed(scratch: Path, moment: str) -> None:
    """A change_time that parses but leaves the datetime range in UTC is malformed, on either path; no crash."""
    later = {**RECORD, "before_status": "OVERDUE", "after_status": "NEW", "change_time": moment, "request_id": "r2"}
    odd_first = {**RECORD, "loan_apply_no": "FI2", "change_time": moment, "request_id": "r3"}
    path = write(scratch, "history.jsonl", "".join(json.dumps(r) + "\n" for r in (RECORD, later, odd_first)))
    for audit in (HistoryAudit.of_file(path), HistoryAudit.of_records([RECORD, later, odd_first])):
        findings = found(audit)
        assert [(f.line, f.kind) for f in findings] == [(2, "malformed"), (3, "malformed")]
        assert all("change_time: is out of range" in f.message for f in findings)


def test_a_date_without_a_time_is_malformed_whatever_the_chain() -> None:
    """``2024-01-04+08:00`` (a date, an offset, no time) is malformed, on a clean chain as on a broken one."""
    dated = {**RECORD, "before_status": "OVERDUE", "after_status": "NEW", "change_time": "2024-01-04+08:00"}
    clean = {**dated, "request_id": "r2"}
    broken = {**dated, "loan_apply_no": "FI2", "before_status": "SETTLED", "request_id": "r3"}
    other = {**RECORD, "loan_apply_no": "FI2", "request_id": "r4"}
    findings = found(HistoryAudit.of_records([RECORD, clean, other, broken]))
    assert [(f.line, f.kind) for f in findings] == [(2, "malformed"), (4, "malformed")]


def test_a_line_in_another_encoding_is_malformed_alone(scratch: Path) -> None:
    """Bytes that are not UTF-8 on one line make that line malformed; the lines around it are read."""
    good = json.dumps(RECORD).encode()
    bad = json.dumps({**RECORD, "customer_id": "客户", "request_id": "r2"}, ensure_ascii=False).encode("gbk")
    third = json.dumps({**RECORD, "before_status": "OVERDUE", "after_status": "NEW", "request_id": "r3"}).encode()
    path = write(scratch, "history.jsonl", b"\n".join([good, bad, third]) + b"\n")
    findings = found(HistoryAudit.of_file(path))
    assert [(f.line, f.kind) for f in findings] == [(2, "malformed")]
    assert "not valid utf-8" in findings[0].message


# -- the API's own time form, offsets, hostile input (issues 10 and 13) ----------------


@given(st.lists(change_events(), max_size=20, unique_by=(lambda e: e.loan_apply_no, lambda e: e.request_id)))
def test_a_file_of_to_top_param_lines_audits_clean(events: list[LoanChangeEvent]) -> None:
    """Any valid events written with ``to_top_param()`` (time as ``yyyy-MM-dd HH:mm:ss``, GMT+8) audit clean."""
    with tempfile.TemporaryDirectory() as name:
        path = write(Path(name), "top.jsonl", "".join(e.to_top_param() + "\n" for e in events))
        audit = HistoryAudit.of_file(path)
        assert found(audit) == []
    assert audit.summary is not None
    assert audit.summary.records == len(events)


def test_the_apis_time_form_is_gmt8_and_compares_as_an_instant() -> None:
    """``2024-01-01 09:00:00`` is 01:00Z: a later change at 00:30Z goes back in time, one at 01:00Z does not."""
    first = {**RECORD, "change_time": "2024-01-01 09:00:00"}
    same = {**RECORD, "before_status": "OVERDUE", "after_status": "NEW", "change_time": "2024-01-01T01:00Z"}
    back = {**RECORD, "change_time": "2024-01-01T00:30:00+00:00", "request_id": "r3"}
    findings = found(HistoryAudit.of_records([first, {**same, "request_id": "r2"}, back]))
    assert [(f.line, f.kind) for f in findings] == [(3, "time-backwards")]
    assert "(line 2) at 2024-01-01T01:00:00+00:00" in findings[0].message


@pytest.mark.parametrize("moment", ["2024-01-01T09:00:00", "2024-01-01 09:00:00.5", "2024-01-01T09:00"])
def test_other_offset_less_times_need_an_assumed_offset(moment: str) -> None:
    """Offset-less times other than the API's form are malformed, and read at ``assume_offset`` when given."""
    record = {**RECORD, "change_time": moment}
    (finding,) = found(HistoryAudit.of_records([record]))
    assert finding.kind == "malformed"
    assert "has no UTC offset" in finding.message
    assert found(HistoryAudit.of_records([record], assume_offset="+08:00")) == []
    later = {**record, "before_status": "OVERDUE", "after_status": "NEW", "change_time": "2024-01-01T00:59Z"}
    findings = found(HistoryAudit.of_records([record, {**later, "request_id": "r2"}], assume_offset="+08:00"))
    assert [f.kind for f in findings] == ["time-backwards"]


@pytest.mark.parametrize("offset", ["+8", "08:00", "+24:00", "+\u0660\u0668:00", "+08:60"])
def test_a_bad_assume_offset_is_refused(offset: str) -> None:
    """``assume_offset`` must be ``+HH:MM`` in ASCII digits, under a day: InvalidConfiguration otherwise."""
    with pytest.raises(InvalidConfiguration, match="assume_offset"):
        HistoryAudit.of_records([RECORD], assume_offset=offset)


@pytest.mark.parametrize("suffix", ["+\u0660\u0668:\u0660\u0660", "+\u0968\u0966:00", "+0\uff18:00"])
def test_an_offset_in_other_digits_is_malformed_on_every_path(suffix: str) -> None:
    """An offset in Arabic-Indic, Devanagari or full-width digits is malformed, as ``from_dict`` says."""
    record = {**RECORD, "change_time": "2024-01-01T09:00:00" + suffix}
    with pytest.raises(InvalidEvent):
        LoanChangeEvent.from_dict(record)
    (finding,) = found(HistoryAudit.of_records([record]))
    assert finding.kind == "malformed"
    assert "change_time" in finding.message


def test_a_fifo_or_a_device_is_refused_without_blocking(scratch: Path) -> None:
    """A FIFO with no writer and ``/dev/zero`` raise UnreadableInput at once (regular files only)."""
    fifo = scratch / "history.jsonl"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(UnreadableInput, match="not a regular file"):
            HistoryAudit.of_file(path)


@pytest.mark.parametrize(("encoding", "says"), [("rot13", "not a text encoding"), ("utf-32", "not supported")])
def test_only_ascii_based_text_encodings_are_accepted(scratch: Path, encoding: str, says: str) -> None:
    """A codec that is not a text encoding, or one that does not write JSON as ASCII does, is refused."""
    path = write(scratch, "history.jsonl", json.dumps(RECORD) + "\n")
    with pytest.raises(UnreadableInput, match=says):
        HistoryAudit.of_file(path, encoding=encoding)


def test_a_deeply_nested_line_is_malformed_and_the_next_one_is_read(scratch: Path) -> None:
    """A line 100,000 levels deep is one malformed finding ("nested too deeply"), never a RecursionError."""
    deep = "[" * 100_000 + "]" * 100_000
    later = json.dumps({**RECORD, "before_status": "OVERDUE", "after_status": "NEW", "request_id": "r2"})
    path = write(scratch, "history.jsonl", "\n".join([json.dumps(RECORD), deep, later]) + "\n")
    findings = found(HistoryAudit.of_file(path))
    assert [(f.line, f.kind) for f in findings] == [(2, "malformed")]
    assert "nested too deeply" in findings[0].message
