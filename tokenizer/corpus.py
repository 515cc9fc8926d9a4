"""Reading a text corpus: input expansion, byte-range shards and streaming line reads.

Corpus format: UTF-8, one sentence a line, a blank line between documents. Files are
read in binary with a bounded read size, so memory stays flat whatever the file or line
size; a very long line is handed on in pieces (see mecab.split_long_text).
"""

import codecs
import glob
import itertools
import os
from dataclasses import dataclass

from .errors import UserError
from .mecab import MAX_PARSE_CHARS, split_long_text

ENCODING_ERRORS = ("strict", "replace", "skip")
_READ_BYTES = 1 << 20


@dataclass(frozen=True)
class Segment:
    """Bytes [start, end) of one file; lines that start inside belong to the segment."""

    path: str
    start: int
    end: int


def expand_inputs(inputs):
    """Files named by paths, directories (every file below, sorted) or glob patterns."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(root, name)
                for root, dirs, names in os.walk(item)
                for name in names
                if not name.startswith(".")
            )
            if not found:
                raise UserError(f"--input_file: the directory {item} holds no files")
            files.extend(found)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                raise UserError(f"--input_file: no file matches {item}")
            files.extend(found)
        elif not os.path.exists(item):
            raise UserError(f"--input_file: {item} does not exist")
        else:
            files.append(item)
    for path in files:
        if not os.access(path, os.R_OK) or not os.path.isfile(path):
            raise UserError(f"--input_file: cannot read {path} (not a readable file)")
    if sum(os.path.getsize(p) for p in files) == 0:
        raise UserError(f"the corpus is empty: {', '.join(files)} hold no text")
    return files


def plan_segments(files, num_shards):
    """Split the files' bytes into ``num_shards`` runs of segments of about equal size."""
    sizes = [os.path.getsize(p) for p in files]
    total = sum(sizes)
    share = -(-total // max(1, num_shards))
    shards, current, room = [], [], share
    for path, size in zip(files, sizes):
        start = 0
        while start < size:
            take = min(room, size - start)
            current.append(Segment(path, start, start + take))
            start += take
            room -= take
            if room == 0:
                shards.append(current)
                current, room = [], share
    if current:
        shards.append(current)
    return shards


def _line_number(path, offset):
    """1-based number of the line holding byte ``offset`` (only used for error messages)."""
    count = 1
    with open(path, "rb") as f:
        remaining = offset
        while remaining > 0:
            block = f.read(min(_READ_BYTES, remaining))
            if not block:
                break
            count += block.count(b"\n")
            remaining -= len(block)
    return count


def _not_utf8(path, offset):
    return UserError(
        f"{path}, line {_line_number(path, offset)}: bytes that are not UTF-8 "
        "(convert the file to UTF-8, or pass --encoding_errors replace or skip)"
    )


def read_lines(segment, encoding_errors="strict", progress=None, with_positions=False):
    """Yield the lines of a segment without their line ends ("" for a blank line).

    With ``with_positions``, yields (byte offset of the line, text) pairs.

    A line longer than MAX_PARSE_CHARS characters comes out in several pieces.
    ``encoding_errors``: strict (stop with the file and line), replace (U+FFFD) or skip
    (drop the line). ``progress(n)`` is called with the bytes read.
    """
    if encoding_errors not in ENCODING_ERRORS:
        raise ValueError(f"encoding_errors must be one of {ENCODING_ERRORS}")
    with open(segment.path, "rb") as f:
        position = segment.start
        if position > 0:
            f.seek(position - 1)
            if f.read(1) != b"\n":  # the segment starts inside a line its neighbour owns
                while True:
                    skipped = f.readline(_READ_BYTES)
                    if progress:
                        progress(len(skipped))
                    if not skipped or skipped.endswith(b"\n"):
                        break
                position = f.tell()
        while position < segment.end:
            chunk = f.readline(_READ_BYTES)
            if not chunk:
                break
            line_start = position
            position += len(chunk)
            if progress:
                progress(len(chunk))
            if chunk.endswith(b"\n") or len(chunk) < _READ_BYTES:  # a whole line: the common case
                try:
                    text = chunk.decode("utf-8")
                except UnicodeDecodeError as error:
                    if encoding_errors == "strict":
                        raise _not_utf8(segment.path, line_start + error.start) from None
                    if encoding_errors == "skip":
                        continue
                    text = chunk.decode("utf-8", "replace")
                text = text.rstrip("\r\n")
                pieces = split_long_text(text) if len(text) > MAX_PARSE_CHARS else (text,)
                for piece in pieces:
                    yield (line_start, piece) if with_positions else piece
            else:
                for piece in _long_line_pieces(f, chunk, line_start, segment.path, encoding_errors, progress):
                    yield (line_start, piece) if with_positions else piece
                position = f.tell()  # the long line ended somewhere past this chunk


def _long_line_pieces(f, chunk, chunk_start, path, encoding_errors, progress):
    """Decode a line longer than one read, yielding its pieces as they complete."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace" if encoding_errors == "replace" else "strict")
    pending = ""
    while True:
        ended = chunk.endswith(b"\n") or not chunk
        try:
            pending += decoder.decode(chunk, final=ended)
        except UnicodeDecodeError as error:
            if encoding_errors == "strict":
                raise _not_utf8(path, chunk_start + max(0, error.start)) from None
            while not ended:  # skip: drop the rest of the line
                chunk = f.readline(_READ_BYTES)
                if progress:
                    progress(len(chunk))
                ended = chunk.endswith(b"\n") or not chunk
            return
        if ended:
            yield from split_long_text(pending.rstrip("\r\n"))
            return
        if len(pending) > 2 * MAX_PARSE_CHARS:  # hand on all but the last piece to keep memory flat
            *done, pending = split_long_text(pending)
            yield from done
        chunk_start = f.tell()
        chunk = f.readline(_READ_BYTES)
        if progress:
            progress(len(chunk))


def read_documents(segment, encoding_errors="strict", progress=None):
    """Yield the documents (lists of non-blank lines) that start inside a segment.

    A document starts after a blank line (or at the start of the file). A segment that
    begins inside a document skips to the next blank line; one that ends inside a document
    reads on to its end, so neighbouring segments share no document and miss none.
    """
    size = os.path.getsize(segment.path)
    head = _decoded_head(segment) if progress is None and segment.end - segment.start <= _READ_BYTES else None
    if head is not None:
        # the fast path: the segment's own lines were read and decoded at once; the streaming
        # reader below only reads on past the segment's end, to the end of its last document
        lines, head_end = head
        tail = read_lines(Segment(segment.path, head_end, size), encoding_errors, with_positions=True)
        lines = itertools.chain(((segment.start, text) for text in lines), tail)
    else:
        lines = read_lines(Segment(segment.path, segment.start, size), encoding_errors, progress, with_positions=True)
    started = segment.start == 0
    document = []
    for position, text in lines:
        blank = not text.strip()
        if not started:
            if blank and position >= segment.end:
                return  # the first document boundary lies in the next segment: nothing is ours
            started = blank
            continue
        if not blank:
            document.append(text)
            continue
        if document:
            yield document
            document = []
        if position >= segment.end:
            return
    if document:
        yield document


def _decoded_head(segment):
    """The lines that start inside a segment, read and decoded at once, and the byte offset after them.

    The positions the document reader needs are only compared with the segment's end, so
    every head line gets the segment's start. None when the bytes are not clean UTF-8 or a
    line is too long to parse whole: the streaming reader handles those (and reports errors).
    """
    begin = max(0, segment.start - 1)
    with open(segment.path, "rb") as f:
        f.seek(begin)
        data = f.read(segment.end - begin)
        if not data.endswith(b"\n"):  # the last line runs past the segment's end: it is ours too
            rest = f.readline(_READ_BYTES)
            if rest and not rest.endswith(b"\n") and len(rest) == _READ_BYTES:
                return None
            data += rest
    first = 0
    if segment.start > 0:
        first = data.find(b"\n") + 1  # skip the line the previous segment owns (or the byte before ours)
        if first == 0:
            return None
    try:
        text = data[first:].decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line.rstrip("\r") for line in lines]
    if max(map(len, lines), default=0) > MAX_PARSE_CHARS:
        return None
    return lines, begin + len(data)


def plan_chunks(files, chunk_bytes):
    """Segments of at most about ``chunk_bytes``, none spanning two files."""
    chunks = []
    for path in files:
        size = os.path.getsize(path)
        count = max(1, -(-size // chunk_bytes))
        bounds = [size * k // count for k in range(count + 1)]
        chunks.extend(Segment(path, bounds[k], bounds[k + 1]) for k in range(count))
    return chunks
