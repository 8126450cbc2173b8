"""Streaming CSV reading with pyarrow, in exact chunks of N rows with physical line numbers.

The file is decoded on its way into pyarrow (its encoding, UTF-8 by default) with undecodable
bytes replaced by U+FFFD, so a value that is not valid text rejects only its own row (the row
holding the replacement character), never the file. Line numbers are physical (header = 1): a row's first line is the header's
lines plus the lines of every record before it, counted from the newlines inside quoted values
(vectorized). Records with the wrong number of fields are reported by pyarrow's invalid-row
handler with their record number (it is known because parsing is single-threaded) and become
rejects at their own line. Chunk k holds the same rows on every run of the same file.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from ordersys_pipelines.domain.imports.csv_format import CsvFormatError

# Small blocks: pyarrow reads a few blocks ahead, and memory is what stays flat, not speed.
BLOCK_SIZE = 1 << 18


@dataclass
class Reject:
    line_number: int
    raw_text: str
    reason: str


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
            yield decoder.decode(line)

    try:
        with open(path, "rb") as raw:
            reader = csv.reader(lines(raw))
            header = next(reader, None)
            line_count = reader.line_num
    except UnicodeDecodeError:
        raise CsvFormatError(
            f"the header is not valid {encoding} text (give the file's encoding with --encoding)"
        ) from None
    if header is None:
        raise CsvFormatError("the file is empty (no header line)")
    if not any(name.strip() for name in header):
        raise CsvFormatError("the header line is empty")
    return header, line_count


class CsvChunkReader:
    """Iterate a CSV file as RawChunks of exactly `chunk_rows` rows (the last may be shorter)."""

    def __init__(self, path: Path, *, chunk_rows: int, encoding: str = "utf-8", block_size: int = BLOCK_SIZE):
        self.path = Path(path)
        self.chunk_rows = chunk_rows
        self.encoding = encoding
        self.block_size = block_size
        self.header, self.header_lines = read_header(self.path, encoding)
        self._file: _TextFile | None = None

    @property
    def bytes_read(self) -> int:
        return self._file.bytes_read if self._file else 0

    def _batches(self, skips: list) -> Iterator[pa.RecordBatch]:
        names = [f"c{i}" for i in range(len(self.header))]
        codec = _python_codec(self.encoding)

        def on_invalid_row(row) -> str:
            skips.append(row)
            return "skip"

        self._file = _TextFile(open(self.path, "rb"), codec)
        try:
            reader = pa_csv.open_csv(
                self._file,
                read_options=pa_csv.ReadOptions(
                    skip_rows=1,
                    column_names=names,
                    block_size=self.block_size,
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
            self._file.close()
            if "Empty CSV file" in str(exc):
                return
            raise CsvFormatError(f"the file cannot be read as CSV: {exc}") from None
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except pa.ArrowInvalid as exc:
                    raise CsvFormatError(f"the file cannot be read as CSV: {exc}") from None
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

        pending: list[tuple[list[pa.Array], np.ndarray]] = []
        pending_rows = 0
        pending_malformed: list[Reject] = []
        index = 0

        def absorb_new_skips() -> None:
            for j in range(len(skip_e), len(skips)):
                # Record numbers count the header as record 1, data from 2, skipped ones included.
                skip_e.append(skips[j].number - 2 - j)
                skip_span_cum.append(skip_span_cum[-1] + 1 + skips[j].text.count("\n"))

        for batch in self._batches(skips):
            absorb_new_skips()
            n = batch.num_rows
            spans = np.ones(n, dtype=np.int64)
            for column in batch.columns:
                spans += pc.count_substring(column, "\n").to_numpy(zero_copy_only=False)
            before = np.concatenate(([0], np.cumsum(spans)[:-1])) if n else spans
            k = emitted + np.arange(n)
            e = np.asarray(skip_e, dtype=np.int64)
            m = np.searchsorted(e, k, side="right")
            lines = first_line + span_before + before + np.asarray(skip_span_cum, dtype=np.int64)[m]
            # Skipped records that lie before the last row of this batch get their line now.
            while assigned < len(skips) and skip_e[assigned] < emitted + n:
                offset = skip_e[assigned] - emitted
                line = first_line + span_before + int(before[offset]) + skip_span_cum[assigned]
                pending_malformed.append(_malformed(skips[assigned], line))
                assigned += 1
            emitted += n
            span_before += int(spans.sum())

            columns = list(batch.columns)
            blank = _blank_rows(columns, n)
            if blank.any():
                keep = pa.array(~blank)
                columns = [c.filter(keep) for c in columns]
                lines = lines[~blank]
            if len(lines):
                pending.append((columns, lines))
                pending_rows += len(lines)
            while pending_rows >= self.chunk_rows:
                chunk_columns, chunk_lines, pending, pending_rows = _take_rows(pending, self.chunk_rows)
                last_line = int(chunk_lines[-1])
                malformed = [r for r in pending_malformed if r.line_number < last_line]
                pending_malformed = [r for r in pending_malformed if r.line_number >= last_line]
                yield self._chunk(index, chunk_columns, chunk_lines, malformed)
                index += 1

        absorb_new_skips()
        while assigned < len(skips):
            line = first_line + span_before + skip_span_cum[assigned]
            pending_malformed.append(_malformed(skips[assigned], line))
            assigned += 1
        if pending_rows or pending_malformed:
            if pending_rows:
                chunk_columns, chunk_lines, _, _ = _take_rows(pending, pending_rows)
            else:
                chunk_columns = [pa.array([], pa.binary()) for _ in self.header]
                chunk_lines = np.array([], dtype=np.int64)
            yield self._chunk(index, chunk_columns, chunk_lines, pending_malformed)

    def _chunk(self, index: int, columns: list[pa.Array], lines: np.ndarray, malformed: list[Reject]) -> RawChunk:
        label = "UTF-8" if _python_codec(self.encoding) == "utf-8" else self.encoding
        decoded, errors = decode_columns(columns, self.header, label)
        return RawChunk(index=index, columns=decoded, line_numbers=lines, utf8_errors=errors, malformed=malformed)


def _malformed(row, line: int) -> Reject:
    return Reject(
        line_number=line,
        raw_text=row.text,
        reason=f"expected {row.expected_columns} fields, found {row.actual_columns}",
    )


def _blank_rows(columns: list[pa.Array], n: int) -> np.ndarray:
    """Rows whose every field is empty: blank lines, which count as lines but not as rows."""
    blank = np.ones(n, dtype=bool)
    for column in columns:
        blank &= pc.equal(pc.binary_length(column), 0).to_numpy(zero_copy_only=False)
    return blank


def _take_rows(pending, count: int):
    """The first `count` rows of the pending batches, and what remains."""
    taken_columns: list[list[pa.Array]] = []
    taken_lines: list[np.ndarray] = []
    need = count
    rest = []
    for columns, lines in pending:
        if need == 0:
            rest.append((columns, lines))
            continue
        size = len(lines)
        if size <= need:
            taken_columns.append(columns)
            taken_lines.append(lines)
            need -= size
        else:
            taken_columns.append([c.slice(0, need) for c in columns])
            taken_lines.append(lines[:need])
            rest.append(([c.slice(need) for c in columns], lines[need:]))
            need = 0
    merged = [pa.concat_arrays([cols[i] for cols in taken_columns]) for i in range(len(taken_columns[0]))]
    remaining = sum(len(lines) for _, lines in rest)
    return merged, np.concatenate(taken_lines), rest, remaining


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
