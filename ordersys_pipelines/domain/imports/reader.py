"""Streaming CSV reading with pyarrow, in exact chunks of N rows with physical line numbers.

The file is decoded on its way into pyarrow (its encoding, UTF-8 by default) with undecodable
bytes replaced by U+FFFD, so a value that is not valid text rejects only its own row (the row
holding the replacement character), never the file. Line numbers are physical (header = 1): a row's first line is the header's
lines plus the lines of every record before it, counted from the newlines inside quoted values
(vectorized). Records with the wrong number of fields are reported by pyarrow's invalid-row
handler with their record number (it is known because parsing is single-threaded) and become
rejects at their own line. Chunk k holds the same rows on every run of the same file.

A record that spans several lines and is rejected (most often a quote that opens and never
closes, swallowing the lines after it) becomes one reject per physical line, each naming where
the quote opened. The file's physical lines are counted from its bytes as they stream through,
so the import can prove that every line is a row, a blank line or part of a quoted value.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from ordersys_pipelines.domain.imports.csv_format import CsvFormatError

LONE_CR = re.compile(rb"(?<=\r)(?!\n)")
# C0 controls other than tab, newline and carriage return, DEL and the C1 controls (a
# windows-1252 file read as latin-1 shows its € and quotes as those). The same pattern in
# Python's re and pyarrow's RE2.
CONTROL_CHARACTERS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
CONTROL_CHARACTER = re.compile(CONTROL_CHARACTERS)
# Small blocks: pyarrow reads a few blocks ahead, and memory is what stays flat, not speed.
BLOCK_SIZE = 1 << 18


@dataclass
class Reject:
    line_number: int
    raw_text: str
    reason: str
    order_ref: str | None = None  # the order the line belongs to, when it can be told


@dataclass
class RawChunk:
    """`columns` are the file's columns in header order, decoded to text (undecodable bytes shown
    as \\x.. escapes); `utf8_errors[i]` names the columns of row i that were not valid text."""

    index: int
    columns: list[pa.Array]
    line_numbers: np.ndarray
    utf8_errors: list[str | None]
    malformed: list[Reject] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return len(self.line_numbers)

    def take(self, mask: np.ndarray) -> RawChunk:
        """The rows where `mask` is true (malformed records stay with the chunk)."""
        indices = pa.array(np.flatnonzero(mask))
        return RawChunk(
            index=self.index,
            columns=[column.take(indices) for column in self.columns],
            line_numbers=self.line_numbers[mask],
            utf8_errors=[e for e, keep in zip(self.utf8_errors, mask, strict=True) if keep],
            malformed=self.malformed,
        )

    def raw_text(self, rows: np.ndarray) -> list[str]:
        """The given rows written back as CSV lines (what the file said, as far as it can be told)."""
        values = [column.take(pa.array(rows)).to_pylist() for column in self.columns]
        out = []
        for fields in zip(*values, strict=True):
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="").writerow(fields)
            out.append(buffer.getvalue())
        return out


class _TextFile(io.RawIOBase):
    """The file as UTF-8 for pyarrow: decoded from its encoding (bytes that do not decode become
    U+FFFD, which marks the rows they are in) and counted for progress reporting."""

    def __init__(self, raw, codec: str):
        self._raw = raw
        self._decoder = codecs.getincrementaldecoder("utf-8-sig" if codec == "utf-8" else codec)(errors="replace")
        self._pending = b""
        self._eof = False
        self.bytes_read = 0
        self.line_ends = 0  # \n, \r\n and lone \r, as pyarrow ends lines
        self._last = b""

    def physical_lines(self) -> int:
        """Lines of the whole text (after it was read to the end): a last line without a line end counts."""
        return self.line_ends + (1 if self._last not in (b"", b"\n", b"\r") else 0)

    def _count_line_ends(self, data: bytes) -> None:
        if not data:
            return
        ends = data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
        if self._last == b"\r" and data[:1] == b"\n":
            ends -= 1  # the \r\n straddles two blocks: one line end, counted with the \r
        self.line_ends += ends
        self._last = data[-1:]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        # Fill the whole buffer (short reads would give pyarrow blocks too small for a record).
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            if not self._pending:
                if self._eof:
                    break
                block = self._raw.read(BLOCK_SIZE)
                self.bytes_read += len(block)
                self._eof = not block
                self._pending = self._decoder.decode(block, final=self._eof).encode("utf-8")
                self._count_line_ends(self._pending)
                continue
            n = min(len(view) - filled, len(self._pending))
            view[filled:filled + n] = self._pending[:n]
            self._pending = self._pending[n:]
            filled += n
        return filled

    def close(self) -> None:
        self._raw.close()
        super().close()


def _python_codec(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise CsvFormatError(f"unknown encoding {encoding!r}") from None


def read_header(path: Path, encoding: str = "utf-8") -> tuple[list[str], int]:
    """The header's field names and how many physical lines it spans (only the header is decoded,
    so bad bytes further down do not fail the file)."""
    codec = _python_codec(encoding)
    decoder = codecs.getincrementaldecoder("utf-8-sig" if codec == "utf-8" else codec)()

    def lines(raw):
        for line in raw:
            for part in LONE_CR.split(line):  # files that end lines with a lone \r
                if part:
                    yield decoder.decode(part)

    try:
        with open(path, "rb") as raw:
            reader = csv.reader(lines(raw))
            header = next(reader, None)
            line_count = reader.line_num
    except UnicodeDecodeError:
        raise CsvFormatError(
            f"the header is not valid {encoding} text (give the file's encoding with --encoding)"
        ) from None
    except csv.Error as exc:
        raise CsvFormatError(f"the header line cannot be read as CSV: {exc}") from None
    if header is None:
        raise CsvFormatError("the file is empty (no header line)")
    if not any(name.strip() for name in header):
        raise CsvFormatError("the header line is empty")
    return header, line_count


class CsvChunkReader:
    """Iterate a CSV file as RawChunks of exactly `chunk_rows` rows (the last may be shorter).

    After the last chunk: `physical_lines` (data lines counted from the bytes), `blank_lines`
    (skipped) and `continued_lines` (the further lines of rows whose quoted values run over
    several lines), so that physical_lines = rows + blank_lines + continued_lines."""

    def __init__(self, path: Path, *, chunk_rows: int, encoding: str = "utf-8", block_size: int = BLOCK_SIZE):
        self.path = Path(path)
        self.chunk_rows = chunk_rows
        self.encoding = encoding
        self.block_size = block_size
        self.header, self.header_lines = read_header(self.path, encoding)
        self._file: _TextFile | None = None
        self.physical_lines = 0
        self.blank_lines = 0
        self.continued_lines = 0

    @property
    def bytes_read(self) -> int:
        return self._file.bytes_read if self._file else 0

    def _batches(self, skips: list) -> Iterator[pa.RecordBatch]:
        """The file's record batches. A record longer than pyarrow's block cannot be parsed
        ("straddles two block boundaries"): the file is then read again with larger blocks,
        skipping what was already handed out, so a huge value costs memory only while needed."""
        block_size = self.block_size
        delivered = 0  # good rows handed out so far
        while True:
            known_skips = skips[-1].number if skips else 0
            try:
                yield from self._batches_from(block_size, skips, known_skips, delivered)
                self.physical_lines = self._file.physical_lines() - self.header_lines
                return
            except _RecordTooLong as exc:
                delivered = exc.delivered
                if block_size >= MAX_BLOCK_SIZE:
                    raise CsvFormatError(
                        f"a row after the first {exc.delivered:,} rows is longer than "
                        f"{MAX_BLOCK_SIZE / 2**20:g} MB, the most one row may hold"
                    ) from None
                block_size = min(block_size * 8, MAX_BLOCK_SIZE)

    def _batches_from(self, block_size: int, skips: list, known_skips: int, delivered: int):
        names = [f"c{i}" for i in range(len(self.header))]
        codec = _python_codec(self.encoding)

        def on_invalid_row(row) -> str:
            if row.number > known_skips:  # a second pass reports the first pass's rows again
                skips.append(row)
            return "skip"

        self._file = _TextFile(open(self.path, "rb"), codec)
        to_drop = delivered
        try:
            try:
                reader = pa_csv.open_csv(
                    self._file,
                    read_options=pa_csv.ReadOptions(
                        skip_rows=1,
                        column_names=names,
                        block_size=block_size,
                        # Single-threaded parsing numbers the records the invalid-row handler reports.
                        use_threads=False,
                    ),
                    parse_options=pa_csv.ParseOptions(
                        newlines_in_values=True,
                        ignore_empty_lines=False,  # blank lines must still count as lines
                        invalid_row_handler=on_invalid_row,
                    ),
                    convert_options=pa_csv.ConvertOptions(
                        column_types=dict.fromkeys(names, pa.binary()),
                        strings_can_be_null=False,
                        quoted_strings_can_be_null=False,
                    ),
                )
            except pa.ArrowInvalid as exc:
                if "Empty CSV file" in str(exc):
                    return
                if _straddles(exc):
                    raise _RecordTooLong(delivered) from None
                raise CsvFormatError(f"the file cannot be read as CSV: {exc}") from None
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except pa.ArrowInvalid as exc:
                    if _straddles(exc):
                        raise _RecordTooLong(delivered) from None
                    raise CsvFormatError(f"the file cannot be read as CSV: {exc}") from None
                if to_drop:
                    if batch.num_rows <= to_drop:
                        to_drop -= batch.num_rows
                        continue
                    batch = batch.slice(to_drop)
                    to_drop = 0
                delivered += batch.num_rows
                yield batch
        finally:
            self._file.close()

    def chunks(self) -> Iterator[RawChunk]:
        skips: list = []  # pyarrow's InvalidRow records, in file order, appended while parsing
        skip_e: list[int] = []  # per skip: how many good rows come before it
        skip_span_cum = [0]  # cumulative physical lines of the skipped records
        assigned = 0  # skips already placed into a chunk
        emitted = 0  # good rows so far (blank ones included)
        span_before = 0  # physical lines of the good rows so far
        first_line = self.header_lines + 1

        pending: list[tuple[list[pa.Array], np.ndarray, np.ndarray]] = []  # columns, lines, spans
        pending_rows = 0
        pending_malformed: list[Reject] = []
        index = 0

        def absorb_new_skips() -> None:
            for j in range(len(skip_e), len(skips)):
                # Record numbers count the header as record 1, data from 2, skipped ones included.
                skip_e.append(skips[j].number - 2 - j)
                skip_span_cum.append(skip_span_cum[-1] + 1 + skips[j].text.count("\n"))

        def take_chunk(count: int) -> RawChunk:
            nonlocal pending, pending_rows, pending_malformed, index
            columns, lines, spans, pending, pending_rows = _take_rows(pending, count)
            last_line = int(lines[-1])
            malformed = [r for r in pending_malformed if r.line_number < last_line]
            pending_malformed = [r for r in pending_malformed if r.line_number >= last_line]
            self.continued_lines += int(spans.sum()) - len(spans)
            chunk = self._chunk(index, columns, lines, malformed)
            index += 1
            return chunk

        for batch in self._batches(skips):
            absorb_new_skips()
            n = batch.num_rows
            spans = np.ones(n, dtype=np.int64)
            for column in batch.columns:
                spans += _line_ends(column)
            before = np.concatenate(([0], np.cumsum(spans)[:-1])) if n else spans
            k = emitted + np.arange(n)
            e = np.asarray(skip_e, dtype=np.int64)
            m = np.searchsorted(e, k, side="right")
            lines = first_line + span_before + before + np.asarray(skip_span_cum, dtype=np.int64)[m]
            # Skipped records that lie before the last row of this batch get their line now.
            while assigned < len(skips) and skip_e[assigned] < emitted + n:
                offset = skip_e[assigned] - emitted
                line = first_line + span_before + int(before[offset]) + skip_span_cum[assigned]
                pending_malformed.extend(_malformed(skips[assigned], line))
                assigned += 1
            emitted += n
            span_before += int(spans.sum())

            columns = list(batch.columns)
            blank = _blank_rows(columns, n)
            if blank.any():
                self.blank_lines += int(spans[blank].sum())
                keep = pa.array(~blank)
                columns = [c.filter(keep) for c in columns]
                lines = lines[~blank]
                spans = spans[~blank]
            if len(lines):
                pending.append((columns, lines, spans))
                pending_rows += len(lines)
            # Strictly more than a chunk: the file's last row stays pending until the end is
            # known (a quote that never closes makes it swallow the lines after it).
            while pending_rows > self.chunk_rows:
                yield take_chunk(self.chunk_rows)

        absorb_new_skips()
        while assigned < len(skips):
            line = first_line + span_before + skip_span_cum[assigned]
            pending_malformed.extend(_malformed(skips[assigned], line))
            assigned += 1
        if pending_rows and int(pending[-1][2][-1]) > 1:
            last_line = int(pending[-1][1][-1])
            absorbed = _unclosed_quote_lines(self.path, self.encoding, last_line)
            if absorbed is not None:
                pending, pending_rows = _drop_last_row(pending)
                pending_malformed.extend(_absorbed_rejects(absorbed, last_line, "the end of the file"))
                pending_malformed.sort(key=lambda r: r.line_number)
        while pending_rows > self.chunk_rows:
            yield take_chunk(self.chunk_rows)
        if pending_rows:
            yield take_chunk(pending_rows)
        if pending_malformed:  # malformed lines after the last good row
            empty = [pa.array([], pa.binary()) for _ in self.header]
            yield self._chunk(index, empty, np.array([], dtype=np.int64), pending_malformed)

    def _chunk(self, index: int, columns: list[pa.Array], lines: np.ndarray, malformed: list[Reject]) -> RawChunk:
        label = "UTF-8" if _python_codec(self.encoding) == "utf-8" else self.encoding
        decoded, errors = decode_columns(columns, self.header, label)
        return RawChunk(index=index, columns=decoded, line_numbers=lines, utf8_errors=errors, malformed=malformed)


# A record must fit in one block; blocks grow up to this for records with huge values.
MAX_BLOCK_SIZE = 1 << 28


class _RecordTooLong(Exception):
    """pyarrow met a record longer than its block after `delivered` good rows."""

    def __init__(self, delivered: int):
        super().__init__(delivered)
        self.delivered = delivered


def _straddles(exc: Exception) -> bool:
    return "straddl" in str(exc)


def _line_ends(column: pa.Array) -> np.ndarray:
    """Line ends inside each value (\n, \r\n or a lone \r), as they count as physical lines."""
    ends = pc.count_substring(column, "\n").to_numpy(zero_copy_only=False)
    returns = pc.count_substring(column, "\r").to_numpy(zero_copy_only=False)
    if returns.any():
        ends = ends + returns - pc.count_substring(column, "\r\n").to_numpy(zero_copy_only=False)
    return ends


def _malformed(row, line: int) -> list[Reject]:
    """A record of the wrong shape: one reject, or one per physical line when a quoted value
    made it run over several lines (most often a quote that opens and never closes)."""
    reason = f"expected {row.expected_columns} fields, found {row.actual_columns}"
    physical = row.text.split("\n")
    if len(physical) == 1:
        return [Reject(line_number=line, raw_text=row.text, reason=reason)]
    last = line + len(physical) - 1
    return _absorbed_rejects([text.rstrip("\r") for text in physical], line, f"line {last}", reason)


def _absorbed_rejects(texts: list[str], line: int, until: str, reason: str | None = None) -> list[Reject]:
    last = line + len(texts) - 1
    opened = f"a quote opened on line {line} runs to {until}, so lines {line}-{last} were read as one row"
    first = f"{opened}{': ' + reason if reason else ''}"
    rest = f"swallowed by the quote opened on line {line} (lines {line}-{last} were read as one row)"
    return [Reject(line_number=line + i, raw_text=text, reason=first if i == 0 else rest)
            for i, text in enumerate(texts)]


def _unclosed_quote_lines(path: Path, encoding: str, line: int) -> list[str] | None:
    """The physical lines from `line` to the end when the record starting there opens a quote
    that the file never closes (pyarrow takes such a value up to the end of the file)."""
    codec = _python_codec(encoding)
    with open(path, encoding="utf-8-sig" if codec == "utf-8" else codec, errors="replace", newline=None) as text:
        tail = [physical for number, physical in enumerate(text, start=1) if number >= line]
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, MAX_BLOCK_SIZE))
    try:
        for _ in csv.reader(tail, strict=True):
            pass
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            return [physical.rstrip("\n") for physical in tail]
    finally:
        csv.field_size_limit(previous)
    return None


def _drop_last_row(pending):
    columns, lines, spans = pending[-1]
    size = len(lines)
    rest = pending[:-1]
    if size > 1:
        rest.append(([c.slice(0, size - 1) for c in columns], lines[:-1], spans[:-1]))
    return rest, sum(len(item[1]) for item in rest)


def _blank_rows(columns: list[pa.Array], n: int) -> np.ndarray:
    """Rows whose every field is empty: blank lines, which count as lines but not as rows."""
    blank = np.ones(n, dtype=bool)
    for column in columns:
        blank &= pc.equal(pc.binary_length(column), 0).to_numpy(zero_copy_only=False)
    return blank


def _take_rows(pending, count: int):
    """The first `count` rows of the pending batches (columns, lines, spans), and what remains."""
    taken: list[tuple[list[pa.Array], np.ndarray, np.ndarray]] = []
    need = count
    rest = []
    for columns, lines, spans in pending:
        if need == 0:
            rest.append((columns, lines, spans))
            continue
        size = len(lines)
        if size <= need:
            taken.append((columns, lines, spans))
            need -= size
        else:
            taken.append(([c.slice(0, need) for c in columns], lines[:need], spans[:need]))
            rest.append(([c.slice(need) for c in columns], lines[need:], spans[need:]))
            need = 0
    merged = [pa.concat_arrays([cols[i] for cols, _, _ in taken]) for i in range(len(taken[0][0]))]
    remaining = sum(len(lines) for _, lines, _ in rest)
    return (merged, np.concatenate([t[1] for t in taken]), np.concatenate([t[2] for t in taken]), rest,
            remaining)


REPLACEMENT = "\ufffd"


def decode_columns(
    columns: list[pa.Array], header: list[str], encoding: str = "UTF-8"
) -> tuple[list[pa.Array], list[str | None]]:
    """Binary → text per column, and for each row the columns that held undecodable bytes."""
    n = len(columns[0]) if columns else 0
    decoded = [column.cast(pa.string()) for column in columns]
    bad_columns: dict[int, list[str]] = {}
    for position, column in enumerate(decoded):
        marked = pc.match_substring(column, REPLACEMENT).to_numpy(zero_copy_only=False)
        for row in np.flatnonzero(marked):
            bad_columns.setdefault(int(row), []).append(header[position].strip())
    errors: list[str | None] = [None] * n
    for row, names in bad_columns.items():
        errors[row] = f"{', '.join(names)}: not valid {encoding} text (shown as {REPLACEMENT})"
    return decoded, errors
