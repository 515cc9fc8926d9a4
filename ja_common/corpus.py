"""Reading a corpus: input expansion, its formats, byte-range shards, streaming reads, sentences.

Formats, told by the name:
- text (any other name, optionally .gz/.bz2/.xz): UTF-8, a blank line between documents, one
  sentence or paragraph a line;
- JSON Lines (.jsonl, optionally compressed): one document a record, its text in a column
  (``--text_column``, default "text");
- Parquet (.parquet) and a folder written by ``datasets``' ``save_to_disk``: the same column.
Everything is streamed: memory stays flat whatever the file or line size; a very long text
line is handed on in pieces (see split_long_text). ``split_sentences`` cuts a document
into the sentences the pair objectives need.
"""

import bz2
import codecs
import glob
import gzip
import itertools
import json
import lzma
import os
import re
import sys
from dataclasses import dataclass

from .errors import UserError

ENCODING_ERRORS = ("strict", "replace", "skip")
_READ_BYTES = 1 << 20
COMPRESSIONS = {".gz": lambda f: gzip.GzipFile(fileobj=f, mode="rb"), ".bz2": bz2.BZ2File, ".xz": lzma.LZMAFile}
DEFAULT_TEXT_COLUMN = "text"
_RECORDS_PER_READ = 1024  # Parquet and datasets rows read at a time
DOCUMENT_CHARS = 1 << 20  # a longer document is cut at a line: a worker holds whole documents
DOCUMENT_BYTES = 3 * DOCUMENT_CHARS  # at most, in UTF-8

# MeCab's lattice grows with the input: longer lines are handed on in pieces of at most this
# many characters, cut at a natural boundary. tokenizer/mecab.py keeps a copy of these two,
# because it is saved beside BPE tokenizers and must run without this project.
MAX_PARSE_CHARS = 10_000
_BREAK_CHARS = "。．.!！?？\n 、，,"


def split_long_text(text, limit=MAX_PARSE_CHARS):
    """Cut text longer than ``limit`` characters after a sentence mark or space, else hard."""
    if len(text) <= limit:
        return [text]
    pieces = []
    start = 0
    while len(text) - start > limit:
        window = text[start : start + limit]
        cut = max(window.rfind(c) for c in _BREAK_CHARS) + 1
        if cut <= 0:
            cut = limit
        pieces.append(text[start : start + cut])
        start += cut
    pieces.append(text[start:])
    return pieces


@dataclass(frozen=True)
class Segment:
    """Bytes [start, end) of one file; lines that start inside belong to the segment.

    An input that cannot be read from any byte (compressed, records) is shared out in ``parts``
    instead: the segment holds every ``parts``-th document, record or batch of rows from ``part``
    on (see iter_documents).
    """

    path: str
    start: int
    end: int
    part: int = 0
    parts: int = 1

    @property
    def bytes(self):
        """The segment's share of the file's bytes (what its progress counts), rounded up."""
        return -(-(self.end - self.start) // self.parts)


def is_datasets_folder(path):
    """A folder written by ``Dataset.save_to_disk``."""
    return os.path.isfile(os.path.join(path, "state.json")) and os.path.isfile(os.path.join(path, "dataset_info.json"))


def corpus_format(path):
    """(format, compression suffix or None) of a corpus input: text, jsonl, parquet or datasets."""
    if os.path.isdir(path):
        return "datasets", None
    name = path.lower()
    compression = next((suffix for suffix in COMPRESSIONS if name.endswith(suffix)), None)
    if compression:
        name = name[: -len(compression)]
    if name.endswith(".jsonl"):
        return "jsonl", compression
    if name.endswith(".parquet") and not compression:
        return "parquet", None
    return "text", compression


def input_signature(path):
    """[path, bytes, newest mtime] of an input file or datasets folder: what keys a cache."""
    files = [path] if os.path.isfile(path) else [os.path.join(path, n) for n in sorted(os.listdir(path))]
    return [os.path.abspath(path), sum(os.path.getsize(f) for f in files), max(os.stat(f).st_mtime_ns for f in files)]


def input_bytes(path):
    return input_signature(path)[1]


def once_each(files, flag="--input_file"):
    """The files in order, each once (by real path): a file given twice, or matched by two patterns,
    would repeat its documents, and held-out documents would be trained on too."""
    seen, kept = set(), []
    for path in files:
        real = os.path.realpath(path)
        if real in seen:
            print(f"warning: {flag} names {path} more than once; it is read once", file=sys.stderr)
            continue
        seen.add(real)
        kept.append(path)
    return kept


def expand_inputs(inputs, flag="--input_file"):
    """Files named by paths, directories (every file below, sorted) or glob patterns.

    A folder written by ``datasets``' ``save_to_disk`` is one input, not a directory of files.
    ``flag``: the command-line flag the inputs came from, named in the errors.
    """
    files = []
    for item in inputs:
        if os.path.isdir(item) and is_datasets_folder(item):
            files.append(item)
        elif os.path.isfile(os.path.join(item, "dataset_dict.json")):
            splits = ", ".join(sorted(d for d in os.listdir(item) if os.path.isdir(os.path.join(item, d))))
            raise UserError(f"{flag}: {item} holds the splits {splits} of a DatasetDict: give one split's "
                            "folder")
        elif os.path.isdir(item):
            found = []
            for root, dirs, names in os.walk(item):
                datasets = [d for d in dirs if is_datasets_folder(os.path.join(root, d))]
                dirs[:] = [d for d in dirs if d not in datasets]  # a datasets folder is one input
                found += [os.path.join(root, name) for name in datasets + names if not name.startswith(".")]
            found.sort()
            if not found:
                raise UserError(f"{flag}: the directory {item} holds no files")
            files.extend(found)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p) or is_datasets_folder(p))
            if not found:
                raise UserError(f"{flag}: no file matches {item}")
            files.extend(found)
        elif not os.path.exists(item):
            raise UserError(f"{flag}: {item} does not exist")
        else:
            files.append(item)
    files = once_each(files, flag)
    for path in files:
        if not os.access(path, os.R_OK) or not (os.path.isfile(path) or is_datasets_folder(path)):
            raise UserError(f"{flag}: cannot read {path} (not a readable file)")
    if sum(input_bytes(p) for p in files) == 0:
        raise UserError(f"the corpus is empty: {', '.join(files)} hold no text")
    return files


def splittable(path):
    """Uncompressed text can be read from any byte; other inputs only from their start."""
    return corpus_format(path) == ("text", None)


# A shard boundary is moved to the next document start, so that every document is read whole
# by one worker (a document drawn by --sample_bytes is drawn the same whatever the process
# count); within a document longer than this it falls back to the next line start.
_DOCUMENT_SCAN_BYTES = 8 * DOCUMENT_BYTES


def plan_segments(files, num_shards):
    """Share the inputs' documents out over at most ``num_shards`` runs of segments of about equal size.

    Uncompressed text is cut into byte ranges at document starts. Any other input is read by as
    many workers as its size calls for, each taking every n-th document, record or batch of rows
    (iter_documents): each of them decompresses the stream, which costs little beside MeCab.
    """
    sizes = [input_bytes(p) for p in files]
    share = -(-sum(sizes) // max(1, num_shards))
    shards, current, room = [], [], share

    def add(segment):
        nonlocal current, room
        current.append(segment)
        room -= segment.bytes
        if room <= 0:
            shards.append(current)
            current, room = [], share

    for path, size in zip(files, sizes):
        if splittable(path):
            start = 0
            while start < size:
                end = _document_start(path, start + room, size)
                add(Segment(path, start, end))
                start = end
        else:
            parts = max(1, min(num_shards, round(size / share)))
            for part in range(parts):
                add(Segment(path, 0, size, part, parts))
    if current:
        shards.append(current)
    return shards


def _document_start(path, offset, size):
    """The first document start at or after byte ``offset`` of an uncompressed text file (the line after
    a blank one), or the next line start inside a very long document."""
    if offset >= size:
        return size
    with open(path, "rb") as f:
        f.seek(offset - 1)
        if f.read(1) != b"\n":
            f.readline()  # to the next line start
        first_line = f.tell()
        while f.tell() - first_line < _DOCUMENT_SCAN_BYTES:
            line = f.readline(_READ_BYTES)
            if not line:
                return size
            if line.endswith(b"\n") and not line.decode("utf-8", "replace").strip():
                return f.tell()
        return first_line


def segment_documents(segment, text_column=DEFAULT_TEXT_COLUMN, encoding_errors="strict", progress=None):
    """The documents (lists of non-blank lines) of a segment from plan_segments, in any format."""
    if splittable(segment.path):
        for group in _line_groups(read_lines(segment, encoding_errors, progress)):
            yield from _bounded(group)
        return
    if progress and segment.parts > 1:
        progress = _share_of(progress, segment.parts)
    yield from iter_documents(segment.path, text_column, encoding_errors, progress, segment.part, segment.parts)


def _share_of(progress, parts):
    """Report 1/parts of the bytes read: each of the parts' readers reads the whole file."""
    read = reported = 0

    def report(n):
        nonlocal read, reported
        read += n
        if read // parts > reported:
            progress(read // parts - reported)
            reported = read // parts

    return report


def _line_number(path, offset):
    """1-based number of the line holding (decompressed) byte ``offset`` (only used for error messages)."""
    count = 1
    with open_binary(path) as (f, _):
        remaining = offset
        while remaining > 0:
            block = f.read(min(_READ_BYTES, remaining))
            if not block:
                break
            count += block.count(b"\n")
            remaining -= len(block)
    return count


class open_binary:
    """``with open_binary(path) as (stream, raw)``: the file's bytes, decompressed when its name says
    .gz/.bz2/.xz; ``raw.tell()`` is the position in the file on disk (for progress bars)."""

    def __init__(self, path):
        self.path, self.raw = path, open(path, "rb")
        self.compression = corpus_format(path)[1]
        self.stream = COMPRESSIONS[self.compression](self.raw) if self.compression else self.raw

    def __enter__(self):
        return self.stream, self.raw

    def __exit__(self, kind, error, traceback):
        self.stream.close()
        self.raw.close()
        # a truncated or damaged archive: EOFError, gzip's BadGzipFile and bz2's OSError, lzma's LZMAError
        if self.compression and isinstance(error, (EOFError, OSError, lzma.LZMAError)):
            raise UserError(f"{self.path}: the {self.compression} file is damaged or cut short ({error}); "
                            "decompress it to check, or compress it again") from None


def _not_utf8(path, line_number):
    return UserError(f"{path}, line {line_number}: bytes that are not UTF-8 "
                     "(convert the file to UTF-8, or pass --encoding_errors replace or skip)")


def read_lines(segment, encoding_errors="strict", progress=None):
    """Yield the lines of a segment without their line ends ("" for a blank line).

    A line longer than MAX_PARSE_CHARS characters comes out in several pieces.
    ``encoding_errors``: strict (stop with the file and line), replace (U+FFFD) or skip
    (drop the line). ``progress(n)`` is called with the bytes read.
    """
    if encoding_errors not in ENCODING_ERRORS:
        raise ValueError(f"encoding_errors must be one of {ENCODING_ERRORS}")
    with open_binary(segment.path) as (f, raw):
        if progress and f is not raw:  # report the compressed bytes read, which the bar counts
            progress = _disk_progress(raw, progress)
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
                        raise _not_utf8(segment.path, _line_number(segment.path, line_start + error.start)) from None
                    if encoding_errors == "skip":
                        continue
                    text = chunk.decode("utf-8", "replace")
                text = text.rstrip("\r\n")
                pieces = split_long_text(text) if len(text) > MAX_PARSE_CHARS else (text,)
                yield from pieces
            else:
                yield from _long_line_pieces(f, chunk, line_start, segment.path, encoding_errors, progress)
                position = f.tell()  # the long line ended somewhere past this chunk


def _disk_progress(raw, progress):
    done = 0

    def report(_):
        nonlocal done
        now = raw.tell()
        if now > done:
            progress(now - done)
            done = now

    return report


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
                raise _not_utf8(path, _line_number(path, chunk_start + max(0, error.start))) from None
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




def iter_documents(path, text_column=DEFAULT_TEXT_COLUMN, encoding_errors="strict", progress=None, part=0, parts=1):
    """Yield the documents of one input, each a list of non-blank lines, whatever its format.

    Text: a blank line (or whitespace only) ends a document. Records (.jsonl, .parquet, datasets):
    one document each, its text cut at its line breaks; blank lines and null texts are left out.
    Lines longer than MAX_PARSE_CHARS come in pieces, documents longer than DOCUMENT_CHARS in
    parts. ``progress(n)`` is called with the bytes of the file read (compressed, when it is).
    With ``parts`` > 1, only share ``part`` of them: every n-th document of text, every n-th record
    of .jsonl, every n-th batch of rows of the others (what is not taken is not parsed).
    """
    form = corpus_format(path)[0]
    if form == "text":
        for number, group in enumerate(_line_groups(_text_lines(path, encoding_errors, progress))):
            if number % parts == part:
                yield from _bounded(group)
        return
    records = {"jsonl": _jsonl_texts, "parquet": _parquet_texts, "datasets": _datasets_texts}[form]
    taken = (lambda number: number % parts == part) if parts > 1 else None
    for text in records(path, text_column, encoding_errors, progress or (lambda n: None), taken):
        lines = (line.rstrip("\r") for line in text.split("\n") if line.strip())
        yield from _bounded(piece for line in lines
                            for piece in (split_long_text(line) if len(line) > MAX_PARSE_CHARS else (line,)))


def _line_groups(lines):
    """The documents of text lines: runs of lines that are not blank (nor whitespace only)."""
    return (group for blank, group in itertools.groupby(lines, key=lambda line: not line.strip()) if not blank)


def _text_lines(path, encoding_errors, progress):
    """read_lines over a whole file, faster: a block of whole lines is decoded and split at once.
    From a block with bytes that are not UTF-8 or a line too long to parse whole, read_lines
    reads on (it reports or handles them)."""
    position = 0
    with open_binary(path) as (f, raw):
        rest, reported = b"", 0
        while True:
            block = f.read(_READ_BYTES)
            data = rest + block
            cut = data.rfind(b"\n") + 1 if block else len(data)
            try:
                lines = data[:cut].decode("utf-8").split("\n")
            except UnicodeDecodeError:
                break
            if cut == 0 or max(map(len, lines)) > MAX_PARSE_CHARS:
                break
            if lines[-1] == "":
                lines.pop()  # after the last line's end
            if progress:
                progress(raw.tell() - reported)
                reported = raw.tell()
            yield from (line.rstrip("\r") for line in lines)
            position, rest = position + cut, data[cut:]
            if not block:
                return
    yield from read_lines(Segment(path, position, float("inf")), encoding_errors, progress)


def _bounded(lines):
    """The lines of one document as documents of at most about DOCUMENT_CHARS characters."""
    document, size = [], 0
    for line in lines:
        if document and size + len(line) > DOCUMENT_CHARS:
            yield document
            document, size = [], 0
        document.append(line)
        size += len(line)
    if document:
        yield document


def _record_text(record, text_column, where):
    if not isinstance(record, dict):
        raise UserError(f"{where}: a record must be a JSON object with a {text_column!r} field")
    if text_column not in record:
        raise UserError(f"{where}: no {text_column!r} field (it has {', '.join(map(repr, list(record)[:10]))}); "
                        "name the text's field with --text_column")
    text = record[text_column]
    if text is not None and not isinstance(text, str):
        raise UserError(f"{where}: the {text_column!r} field holds {type(text).__name__}, not text; "
                        "name the text's field with --text_column")
    return text


def _jsonl_texts(path, text_column, encoding_errors, progress, taken=None):
    with open_binary(path) as (f, raw):
        done = 0
        for number, line in enumerate(f, 1):
            now = raw.tell()
            progress(now - done)
            done = now
            if not line.strip() or (taken and not taken(number)):
                continue
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                if encoding_errors == "strict":
                    raise _not_utf8(path, number) from None
                if encoding_errors == "skip":
                    continue
                line = line.decode("utf-8", "replace")
            try:
                record = json.loads(line)
            except ValueError as error:
                raise UserError(f"{path}, line {number}: not a JSON record ({error})") from None
            text = _record_text(record, text_column, f"{path}, line {number}")
            if text:
                yield text


def _check_text_column(path, text_column, columns, types):
    if text_column not in columns:
        raise UserError(f"{path}: no column {text_column!r} (it has {', '.join(map(repr, columns))}); "
                        "name the text's column with --text_column")
    kind = types[columns.index(text_column)]
    kind = getattr(kind, "dtype", str(kind))  # a datasets feature's Arrow type name, or the Arrow type's
    if kind not in ("string", "large_string", "string_view"):
        raise UserError(f"{path}: the column {text_column!r} holds {kind}, not text; "
                        "name the text's column with --text_column")


def _parquet_texts(path, text_column, encoding_errors, progress, taken=None):
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow's ArrowInvalid and kin: not a Parquet file, truncated
        raise UserError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0][:200]})") from None
    schema = parquet.schema_arrow
    _check_text_column(path, text_column, schema.names, schema.types)
    batches = parquet.iter_batches(batch_size=_RECORDS_PER_READ, columns=[text_column])
    batches = ((batch.num_rows, lambda batch=batch: batch.column(0).to_pylist()) for batch in batches)
    yield from _batched_texts(batches, parquet.metadata.num_rows, os.path.getsize(path), progress, taken)


def _datasets_texts(path, text_column, encoding_errors, progress, taken=None):
    from datasets import Dataset, load_from_disk

    dataset = load_from_disk(path)
    if not isinstance(dataset, Dataset):
        raise UserError(f"{path} holds the splits {', '.join(dataset)}: give one split's folder, e.g. "
                        f"{os.path.join(path, next(iter(dataset)))}")
    _check_text_column(path, text_column, dataset.column_names, [dataset.features[c] for c in dataset.column_names])
    table = dataset.select_columns([text_column]).with_format("arrow")
    batches = ((len(batch), lambda batch=batch: batch.column(0).to_pylist()) for batch in table.iter(_RECORDS_PER_READ))
    yield from _batched_texts(batches, len(dataset), input_bytes(path), progress, taken)


def _batched_texts(batches, rows, size, progress, taken=None):
    """The non-empty texts of batches, (row count, a function giving the texts), of ``rows`` in all;
    progress as a share of ``size`` bytes. ``taken(n)``: whether to read the n-th batch."""
    done = reported = 0
    for number, (count, texts) in enumerate(batches):
        if not taken or taken(number):
            yield from (text for text in texts() if text)
        done += count
        now = size * done // max(rows, 1)
        progress(now - reported)
        reported = now


# One sentence: quoted speech 「…」『…』 whole, anything but a sentence end, then the ends
# (。！？, with closing brackets after them). An unclosed 「 is an ordinary character.
_SENTENCE = re.compile(r"(?:「[^」]*」|『[^』]*』|[^。！？])*?(?:[。！？]+[」』）)]*|$)")


_MARK_INSIDE = re.compile("[。！？](?=.)")  # a sentence mark before the line's last character


def split_sentences(line):
    """The sentences of one line: cut after 。！？ outside 「」 and 『』; a line of one sentence stays whole."""
    if _MARK_INSIDE.search(line) is None:
        return [line]  # the common case of one-sentence-a-line corpora
    return [sentence for sentence in _SENTENCE.findall(line) if sentence.strip()]
