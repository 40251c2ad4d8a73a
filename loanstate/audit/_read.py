"""Reading history files for the audit and the import: refusing bad files early, streaming records.

:func:`sniff` opens a file and refuses, at once, one that is missing,
unreadable, not a regular file (a FIFO or a device would block or never end),
binary or mis-encoded (:class:`~loanstate.UnreadableInput`); :func:`source_of`
then gives a :class:`JsonlSource` or :class:`CsvSource` that streams its
records in batches, in bounded memory (no line longer than
:data:`MAX_RECORD_BYTES` is ever held whole), and, for the audit's confirming
pass, only the lines that can carry one of the candidate request_ids.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import stat
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final, Literal

import attrs

from loanstate._errors import UnreadableInput

__all__ = [
    "MAX_RECORD_BYTES",
    "SNIFF_BYTES",
    "Bad",
    "Batch",
    "CsvSource",
    "InputFormat",
    "JsonlSource",
    "ProgressCallback",
    "Source",
    "check_encoding",
    "records_of",
    "sniff",
    "source_of",
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

REQUIRED: Final = ("loan_apply_no", "before_status", "after_status", "change_time", "request_id")
_BOM: Final = codecs.BOM_UTF8
# C0 controls that never appear in text records; more than a few in the first
# chunk means the file is not text even when it holds no NUL byte.
_BINARY_BYTES: Final = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27))
# What every record's syntax is made of: an encoding must write these as ASCII does,
# or neither the line splitting nor the confirming pass's byte search would work.
_ASCII_SAMPLE: Final = '{"request_id": "Az09_-"},:[]\r\n'

ProgressCallback = Callable[[int, int, str], None]
"""``on_progress(done_bytes, total_bytes, phase)``; ``phase`` is ``"checking"`` or ``"confirming"``."""


@attrs.frozen
class Bad:
    """A record that could not even be read as one (its reason)."""

    reason: str


# A batch: (line of the first record, records on consecutive lines), a record
# being a mapping, a Bad, or None for a blank line. Batches keep the
# per-record cost out of generator hops.
Batch = tuple[int, Sequence[object]]

# A source yields batches of records. It is called again for the audit's confirming
# pass with the candidate request_ids: it may then yield only the records that can
# carry one of them (a superset is fine).
Source = Callable[[ProgressCallback | None, Collection[str] | None], Iterator[Batch]]


def check_encoding(encoding: str) -> str:
    """The codec's canonical name; ValueError saying why when it is not an ASCII-based text encoding.

    ``rot13`` or ``base64`` are codecs but not text encodings; UTF-16, UTF-32 or
    EBCDIC write JSON's punctuation in other bytes than ASCII.
    """
    try:
        codec = codecs.lookup(encoding)
        b"a".decode(codec.name)  # LookupError for a bytes-to-bytes or str-to-str codec
    except UnicodeError:
        pass  # a text encoding ("a" alone is no UTF-16 text): judged below
    except LookupError as exc:
        known = "unknown" not in str(exc)
        raise ValueError(
            f"{encoding!r} is not a text encoding" if known else f"unknown encoding {encoding!r}"
        ) from None
    try:
        # utf-8-sig writes a BOM first, which the readers skip.
        compatible = _ASCII_SAMPLE.encode(codec.name).removeprefix(_BOM) == _ASCII_SAMPLE.encode("ascii")
    except (UnicodeError, ValueError, LookupError):
        compatible = False
    if not compatible:
        raise ValueError(f"encoding {encoding!r} is not supported (use UTF-8, GBK or another ASCII-based one)")
    return codec.name


def open_regular(path: str) -> IO[bytes]:
    """Open a regular file for reading; UnreadableInput for anything else (never blocks on a FIFO)."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UnreadableInput(path, "no such file") from None
    except PermissionError:
        raise UnreadableInput(path, "permission denied") from None
    except IsADirectoryError:
        raise UnreadableInput(path, "is a directory, not a history file") from None
    except OSError as exc:
        raise UnreadableInput(path, f"cannot read: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise UnreadableInput(path, "is a directory, not a history file")
        raise UnreadableInput(path, "is not a regular file (a pipe, device or socket): save it to a file first")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def sniff(path: str, encoding: str) -> bytes:
    """Open the file and read its first chunk; refuse what is not a readable text file."""
    try:
        codec_name = check_encoding(encoding)
    except ValueError as exc:
        raise UnreadableInput(path, str(exc)) from None
    with open_regular(path) as f:
        try:
            head = f.read(SNIFF_BYTES)
        except OSError as exc:
            raise UnreadableInput(path, f"cannot read: {exc.strerror or exc}") from None
    if b"\x00" in head or sum(head.count(b) for b in _BINARY_BYTES) > max(8, len(head) // 100):
        raise UnreadableInput(path, "is a binary file, not JSON Lines or CSV")
    # A stray bad line is a malformed record; many undecodable bytes up front mean
    # the whole file is in another encoding, which is worth saying at once.
    text = codecs.getincrementaldecoder(codec_name)(errors="surrogateescape").decode(
        head, final=len(head) < SNIFF_BYTES
    )
    undecodable = len(_UNDECODABLE.findall(text))
    if undecodable > _UNDECODABLE_AT_MOST:
        hint = " (if it is GBK, pass --encoding gbk)" if codec_name == "utf-8" else ""
        raise UnreadableInput(
            path, f"is not {codec_name} text ({undecodable} undecodable bytes in its first {len(head)}){hint}"
        )
    return head


def source_of(path: str, encoding: str, input_format: InputFormat | None, required: Sequence[str] = REQUIRED) -> Source:
    """A source of the file's records (format from ``input_format``, else the suffix, else sniffed).

    A CSV header must name every field in ``required``.
    """
    head = sniff(path, encoding)
    fmt = input_format or _guess_format(path, head)
    if fmt == "csv":
        return CsvSource(path, encoding, _csv_header(path, head, encoding, required))
    return JsonlSource(path, encoding)


def _guess_format(path: str, head: bytes) -> InputFormat:
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".txt"):
        return "csv"
    return "jsonl" if head.removeprefix(_BOM).lstrip().startswith(b"{") else "csv"


def _csv_header(path: str, head: bytes, encoding: str, required: Sequence[str]) -> list[str]:
    text = head.removeprefix(_BOM).decode(encoding, errors="replace")
    try:
        first = next(csv.reader(io.StringIO(text)), None)
    except csv.Error as exc:  # e.g. a lone CR (old Mac line ends) in the header
        raise UnreadableInput(path, f"has no readable CSV header row: {exc}") from None
    if not first:
        raise UnreadableInput(path, "is empty: a CSV file starts with a header row naming the fields")
    header = [h.strip() for h in first]
    missing = [name for name in required if name not in header]
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
            on_progress(min(done, total), total, phase)
    if carry and not skipping:
        yield carry
    if on_progress is not None:
        on_progress(total, total, phase)


@attrs.frozen
class JsonlSource:
    """The records of a JSON Lines file, one per line, in batches."""

    path: str
    encoding: str

    def __call__(self, on_progress: ProgressCallback | None, wanted: Collection[str] | None) -> Iterator[Batch]:
        if wanted is not None:
            yield from self._mentioning(on_progress, wanted)
            return
        encoding = self.encoding
        scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().raw_decode
        line = 1  # the number of the line that starts the block
        with open_regular(self.path) as f:
            for block in _blocks(f, on_progress, "checking"):
                if block is None:
                    yield line, (Bad(f"longer than {MAX_RECORD_BYTES} bytes"),)
                    line += 1
                    continue
                try:
                    text = block.decode(encoding)
                    parse = scan
                except UnicodeDecodeError:
                    # Keep the bytes recoverable; the line-by-line reader reports the bad line.
                    text = block.decode(encoding, errors="surrogateescape")
                    parse = _line_by_line
                for records in _parse_block(parse, text, line, encoding):
                    yield line, records
                    line += len(records)

    def _mentioning(self, on_progress: ProgressCallback | None, wanted: Collection[str]) -> Iterator[Batch]:
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
        with open_regular(self.path) as f:
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


def _line_by_line(text: str, pos: int) -> tuple[Any, int]:
    """A scanner that takes nothing, so :func:`_parse_block` reads every line on its own."""
    raise ValueError


def _parse_block(
    scan: Callable[[str, int], tuple[Any, int]], text: str, line: int, encoding: str
) -> Iterator[list[object]]:
    """The records of a block of whole lines, a list per (at most) _BATCH_LINES lines.

    The common line is one JSON object then a newline: the decoder scans it in
    place in the block (no per-line string, no per-line wrapper), and the line
    must end where the object does. Anything else (blank, padded, bad, deep) is
    read again on its own by :func:`_read_line`, which says what is wrong.
    Small batches: the parsed records die young, which keeps the garbage
    collector's full passes (and their cost) rare.
    """
    size = len(text)
    pos = 0
    records: list[object] = []
    append = records.append
    while pos < size:
        try:
            record, end = scan(text, pos)
            after = text[end : end + 2]
            if after[:1] == "\n":
                pos = end + 1
            elif after == "\r\n":
                pos = end + 2
            elif end == size:  # the last line, without a newline
                pos = end
            else:
                raise ValueError  # more after the object on its line
            append(record)
        except (ValueError, RecursionError):
            end = text.find("\n", pos) + 1 or size
            append(_read_line(text[pos:end], line + len(records), encoding))
            pos = end
        if len(records) == _BATCH_LINES:
            yield records
            line += _BATCH_LINES
            records = []
            append = records.append
    if records:
        yield records


def records_of(batches: Iterator[Batch]) -> Iterator[tuple[int, object]]:
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
    except RecursionError:
        return Bad("bad JSON: nested too deeply")
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        return _read_bad_line(raw, line, exc, encoding) if raw.strip() else None


def _read_bad_line(raw: bytes, line: int, exc: ValueError, encoding: str) -> object:
    """The record on a line the fast path could not read, or why it is not one."""
    if not raw:
        return Bad(f"longer than {MAX_RECORD_BYTES} bytes")
    if line == 1 and raw.startswith(_BOM):
        try:
            return json.loads(raw[3:].decode(encoding))
        except RecursionError:
            return Bad("bad JSON: nested too deeply")
        except ValueError as again:
            exc = again
    return Bad(_json_problem(exc, encoding))


def _json_problem(exc: ValueError, encoding: str) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid {encoding} text (byte {exc.start} of the line)"
    if isinstance(exc, json.JSONDecodeError):
        return f"bad JSON: {exc.msg} (column {exc.colno})"
    return f"bad JSON: {exc}"


@attrs.frozen
class CsvSource:
    """The records of a CSV file with a header row naming the fields, one batch per row."""

    path: str
    encoding: str
    header: list[str]

    def __call__(self, on_progress: ProgressCallback | None, wanted: Collection[str] | None) -> Iterator[Batch]:
        for line, record in self._rows(on_progress, wanted):
            yield line, (record,)

    def _rows(
        self, on_progress: ProgressCallback | None, wanted: Collection[str] | None
    ) -> Iterator[tuple[int, object]]:
        # Rows may span lines (quoted newlines), so the confirming pass reads them all again.
        phase = "checking" if wanted is None else "confirming"
        overlong: set[int] = set()
        lines = _PhysicalLines(self.encoding, overlong)
        with open_regular(self.path) as f:
            reader = csv.reader(lines.of(_blocks(f, on_progress, phase)))
            end = 0
            first = True
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    start, end = end + 1, lines.count
                    yield start, Bad(f"bad CSV: {exc}")
                    continue
                start, end = end + 1, lines.count
                if first:
                    first = False
                elif start in overlong:
                    yield start, Bad(f"longer than {MAX_RECORD_BYTES} bytes")
                elif row and (len(row) > 1 or row[0].strip()):
                    yield start, self._record(row)

    def _record(self, row: list[str]) -> object:
        if len(row) != len(self.header):
            return Bad(f"has {len(row)} fields, the header has {len(self.header)}")
        if any(_has_undecodable(value) for value in row):
            return Bad(f"not valid {self.encoding} text")
        # An empty cell is an absent field.
        return {name: value for name, value in zip(self.header, row, strict=True) if value != ""}


@attrs.define
class _PhysicalLines:
    """Decodes blocks into text lines for the csv module, counting physical lines as it goes."""

    encoding: str
    overlong: set[int]
    count: int = 0

    def of(self, blocks: Iterator[bytes | None]) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder(self.encoding)(errors="surrogateescape")
        for block in blocks:
            if block is None:
                self.count += 1
                self.overlong.add(self.count)
                yield "\n"
                continue
            parts = block.split(b"\n")
            last = parts.pop()
            for raw in parts:
                self.count += 1
                yield decoder.decode((raw.removeprefix(_BOM) if self.count == 1 else raw) + b"\n")
            if last:
                self.count += 1
                yield decoder.decode(last.removeprefix(_BOM) if self.count == 1 else last)


def _has_undecodable(value: str) -> bool:
    # surrogateescape turns each undecodable byte into a lone surrogate U+DC80..U+DCFF.
    return any("\udc80" <= ch <= "\udcff" for ch in value) if not value.isascii() else False
