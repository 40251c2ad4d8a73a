"""Reading history files for the audit (:mod:`loanstate._audit`): refusing bad files early, streaming records.

:func:`_sniff` opens a file and refuses, at once, one that is missing,
unreadable, binary or mis-encoded (:class:`~loanstate.UnreadableInput`);
:class:`_JsonlSource` and :class:`_CsvSource` then stream its records in
batches, in bounded memory, and for the confirming pass only the lines that can
carry one of the candidate request_ids.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import IO, Final, Literal

import attrs

from loanstate._errors import UnreadableInput

__all__ = [
    "MAX_RECORD_BYTES",
    "SNIFF_BYTES",
    "InputFormat",
    "ProgressCallback",
]

#: The input formats a history file may have.
InputFormat = Literal["jsonl", "csv"]
#: A record line longer than this is malformed (and never read into memory whole).
MAX_RECORD_BYTES: Final = 1 << 22
#: How much of a file is examined up front to refuse binary or mis-encoded input early.
SNIFF_BYTES: Final = 64 * 1024
_CHUNK_BYTES: Final = 1 << 22
# Up to this many candidate duplicates, the confirming pass searches raw bytes; beyond, it re-reads.
_FIND_AT_MOST: Final = 32
_BATCH_LINES: Final = 256
# surrogateescape turns each undecodable byte into a lone surrogate U+DC80..U+DCFF.
_UNDECODABLE: Final = re.compile("[\udc80-\udcff]")
_UNDECODABLE_AT_MOST: Final = 16

_REQUIRED: Final = ("loan_apply_no", "before_status", "after_status", "change_time", "request_id")
_BOM: Final = codecs.BOM_UTF8
# C0 controls that never appear in text records; more than a few in the first
# chunk means the file is not text even when it holds no NUL byte.
_BINARY_BYTES: Final = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27))

ProgressCallback = Callable[[int, int, str], None]
"""``on_progress(done_bytes, total_bytes, phase)``; ``phase`` is ``"checking"`` or ``"confirming"``."""


@attrs.frozen
class _Bad:
    """A record that could not even be read as one (its reason)."""

    reason: str


# A batch: (line of the first record, records on consecutive lines), a record
# being a mapping, a _Bad, or None for a blank line. Batches keep the
# per-record cost out of generator hops.
_Batch = tuple[int, Sequence[object]]


def _sniff(path: str, encoding: str) -> bytes:
    """Open the file and read its first chunk; refuse what is not a readable text file."""
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise UnreadableInput(path, f"unknown encoding {encoding!r}") from None
    if codec.name.startswith(("utf-16", "utf-32")):
        raise UnreadableInput(
            path, f"encoding {encoding!r} is not supported (use UTF-8, GBK or another ASCII-based one)"
        )
    p = Path(path)
    try:
        if p.is_dir():
            raise UnreadableInput(path, "is a directory, not a history file")
        with p.open("rb") as f:
            head = f.read(SNIFF_BYTES)
    except FileNotFoundError:
        raise UnreadableInput(path, "no such file") from None
    except PermissionError:
        raise UnreadableInput(path, "permission denied") from None
    except OSError as exc:
        raise UnreadableInput(path, f"cannot read: {exc.strerror or exc}") from None
    if b"\x00" in head or sum(head.count(b) for b in _BINARY_BYTES) > max(8, len(head) // 100):
        raise UnreadableInput(path, "is a binary file, not a JSON Lines or CSV history")
    # A stray bad line is a malformed record; many undecodable bytes up front mean
    # the whole file is in another encoding, which is worth saying at once.
    text = codecs.getincrementaldecoder(codec.name)(errors="surrogateescape").decode(
        head, final=len(head) < SNIFF_BYTES
    )
    undecodable = len(_UNDECODABLE.findall(text))
    if undecodable > _UNDECODABLE_AT_MOST:
        hint = " (if it is GBK, pass --encoding gbk)" if codec.name == "utf-8" else ""
        raise UnreadableInput(
            path, f"is not {codec.name} text ({undecodable} undecodable bytes in its first {len(head)}){hint}"
        )
    return head


def _guess_format(path: str, head: bytes) -> InputFormat:
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".txt"):
        return "csv"
    return "jsonl" if head.removeprefix(_BOM).lstrip().startswith(b"{") else "csv"


def _csv_header(path: str, head: bytes, encoding: str) -> list[str]:
    text = head.removeprefix(_BOM).decode(encoding, errors="replace")
    try:
        first = next(csv.reader(io.StringIO(text)), None)
    except csv.Error as exc:  # e.g. a lone CR (old Mac line ends) in the header
        raise UnreadableInput(path, f"has no readable CSV header row: {exc}") from None
    if not first:
        raise UnreadableInput(path, "is empty: a CSV history starts with a header row naming the fields")
    header = [h.strip() for h in first]
    missing = [name for name in _REQUIRED if name not in header]
    if missing:
        raise UnreadableInput(path, f"CSV header lacks {', '.join(missing)} (it has: {', '.join(header)[:200]})")
    return header


def _blocks(f: IO[bytes], on_progress: ProgressCallback | None, phase: str) -> Iterator[bytes | None]:
    """The file as blocks of whole lines (each ending in a newline, but perhaps the last).

    Reading big chunks keeps per-line overhead out of Python. A line longer than
    MAX_RECORD_BYTES is never held whole: it is skipped and ``None`` stands for it.
    """
    total = os.fstat(f.fileno()).st_size
    carry = b""
    done = 0
    skipping = False
    while chunk := f.read(_CHUNK_BYTES):
        done += len(chunk)
        if skipping:
            cut = chunk.find(b"\n")
            if cut < 0:
                continue
            chunk = chunk[cut + 1 :]
            skipping = False
        data = carry + chunk if carry else chunk
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut]
        carry = data[cut:]
        if len(carry) > MAX_RECORD_BYTES:
            yield None
            carry, skipping = b"", True
        if on_progress is not None:
            on_progress(done, total, phase)
    if carry and not skipping:
        yield carry
    if on_progress is not None:
        on_progress(total, total, phase)


@attrs.frozen
class _JsonlSource:
    path: str
    encoding: str

    def __call__(self, on_progress: ProgressCallback | None, wanted: Collection[str] | None) -> Iterator[_Batch]:
        if wanted is not None:
            yield from self._mentioning(on_progress, wanted)
            return
        decode = json.JSONDecoder().decode
        encoding = self.encoding
        line = 1  # the number of the line that starts the block
        with Path(self.path).open("rb") as f:
            for block in _blocks(f, on_progress, "checking"):
                if block is None:
                    yield line, (_Bad(f"longer than {MAX_RECORD_BYTES} bytes"),)
                    line += 1
                    continue
                valid = True
                try:
                    lines = block.decode(encoding).split("\n")
                except UnicodeDecodeError:
                    # Keep the bytes recoverable; the line-by-line reader reports the bad line.
                    lines = block.decode(encoding, errors="surrogateescape").split("\n")
                    valid = False
                if not lines[-1]:
                    lines.pop()
                # Small batches: the parsed records die young, which keeps the
                # garbage collector's full passes (and their cost) rare.
                for start in range(0, len(lines), _BATCH_LINES):
                    part = lines[start : start + _BATCH_LINES]
                    try:
                        if not valid:
                            raise ValueError
                        records: list[object] = [decode(text) for text in part]  # the fast path
                    except ValueError:  # a bad or blank line: read this batch line by line
                        records = [_read_line(text, line + i, encoding) for i, text in enumerate(part)]
                    yield line, records
                    line += len(part)

    def _mentioning(self, on_progress: ProgressCallback | None, wanted: Collection[str]) -> Iterator[_Batch]:
        """Only the records whose line contains one of ``wanted``, found by ``bytes.find`` over whole blocks.

        request_ids are plain ASCII (``[A-Za-z0-9_-]``), so they appear verbatim in
        the line in any ASCII-based encoding; only those lines are parsed. With
        many candidates a plain re-read is cheaper, so that is what happens then.
        """
        if len(wanted) > _FIND_AT_MOST:
            yield from self(on_progress, None)
            return
        needles = [w.encode("ascii") for w in wanted]
        encoding = self.encoding
        line = 1  # the number of the line that starts the block
        with Path(self.path).open("rb") as f:
            for block in _blocks(f, on_progress, "confirming"):
                if block is None:
                    line += 1
                    continue
                hits = []
                for needle in needles:
                    at = block.find(needle)
                    while at >= 0:
                        hits.append(at)
                        at = block.find(needle, at + 1)
                pos = 0
                for at in sorted(hits):
                    if at < pos:
                        continue  # another hit on a line already read
                    start = block.rfind(b"\n", 0, at) + 1
                    end = block.find(b"\n", at) + 1 or len(block)
                    line += block.count(b"\n", pos, start)
                    text = block[start:end].decode(encoding, errors="surrogateescape")
                    yield line, (_read_line(text, line, encoding),)
                    pos = end
                    line += 1
                line += block.count(b"\n", pos)


def _records(batches: Iterator[_Batch]) -> Iterator[tuple[int, object]]:
    """(line, record) for every record of the batches (blank lines left out)."""
    for first, batch in batches:
        for offset, record in enumerate(batch):
            if record is not None:
                yield first + offset, record


def _read_line(text: str, line: int, encoding: str) -> object:
    """One line's record, or why it is not one; ``None`` if blank. Undecodable bytes come as surrogateescapes."""
    raw = text.encode(encoding, errors="surrogateescape")
    try:
        return json.loads(raw.decode(encoding))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        return _read_bad_line(raw, line, exc, encoding) if raw.strip() else None


def _read_bad_line(raw: bytes, line: int, exc: ValueError, encoding: str) -> object:
    """The record on a line the fast path could not read, or why it is not one."""
    if not raw:
        return _Bad(f"longer than {MAX_RECORD_BYTES} bytes")
    if line == 1 and raw.startswith(_BOM):
        try:
            return json.loads(raw[3:].decode(encoding))
        except ValueError as again:
            exc = again
    return _Bad(_json_problem(exc, encoding))


def _json_problem(exc: ValueError, encoding: str) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid {encoding} text (byte {exc.start} of the line)"
    if isinstance(exc, json.JSONDecodeError):
        return f"bad JSON: {exc.msg} (column {exc.colno})"
    return f"bad JSON: {exc}"


@attrs.frozen
class _CsvSource:
    path: str
    encoding: str
    header: list[str]

    def __call__(self, on_progress: ProgressCallback | None, wanted: Collection[str] | None) -> Iterator[_Batch]:
        for line, record in self._rows(on_progress, wanted):
            yield line, (record,)

    def _rows(
        self, on_progress: ProgressCallback | None, wanted: Collection[str] | None
    ) -> Iterator[tuple[int, object]]:
        # Rows may span lines (quoted newlines), so the confirming pass reads them all again.
        phase = "checking" if wanted is None else "confirming"
        header = self.header
        width = len(header)
        overlong: set[int] = set()
        with Path(self.path).open("rb") as f:
            decoder = codecs.getincrementaldecoder(self.encoding)(errors="surrogateescape")
            physical = 0

            def text_lines() -> Iterator[str]:
                nonlocal physical
                for block in _blocks(f, on_progress, phase):
                    if block is None:
                        physical += 1
                        overlong.add(physical)
                        yield "\n"
                        continue
                    parts = block.split(b"\n")
                    last = parts.pop()
                    for raw in parts:
                        physical += 1
                        yield decoder.decode((raw.removeprefix(_BOM) if physical == 1 else raw) + b"\n")
                    if last:
                        physical += 1
                        yield decoder.decode(last.removeprefix(_BOM) if physical == 1 else last)

            reader = csv.reader(text_lines())
            end = 0
            first = True
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    start, end = end + 1, physical
                    yield start, _Bad(f"bad CSV: {exc}")
                    continue
                start, end = end + 1, physical
                if first:
                    first = False
                    continue
                if start in overlong:
                    yield start, _Bad(f"longer than {MAX_RECORD_BYTES} bytes")
                    continue
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != width:
                    yield start, _Bad(f"has {len(row)} fields, the header has {width}")
                    continue
                if any(_has_undecodable(value) for value in row):
                    yield start, _Bad(f"not valid {self.encoding} text")
                    continue
                # An empty cell is an absent field.
                yield start, {name: value for name, value in zip(header, row, strict=True) if value != ""}


def _has_undecodable(value: str) -> bool:
    # surrogateescape turns each undecodable byte into a lone surrogate U+DC80..U+DCFF.
    return any("\udc80" <= ch <= "\udcff" for ch in value) if not value.isascii() else False
