"""One chunk of the corpus -> its examples, in the Arrow files of an examples folder.

The main process streams the corpus's documents (any format ja_common/corpus.py reads) and
cuts them into chunks of about CHUNK_CHARS characters, each file on its own (``plan_chunks``).
Worker processes split each chunk's documents into sentences and the sentences into MeCab
words, encode them with the subword model into one flat array (tokenizer/encoder.py), build
the examples of the objective as numpy arrays (pretraining/data/builders.py) with a random
generator seeded by (seed, chunk), and write an Arrow file in the compact form of
pretraining/data/storage.py (``build_chunk``). The main process copies the chunk files, in chunk
order, into the folder's data files (``Split``). The result is independent of the number of
workers and of the corpus format (a .jsonl file and the same text as .txt give the same
folder), and memory is bounded by the chunk size and a few chunks in flight, not the corpus
size. pretraining/data/cache.py decides when to build, and installs and opens the folders.
"""

import collections
import contextlib
import multiprocessing as mp
import os
import random
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ja_common.corpus import DEFAULT_TEXT_COLUMN, iter_documents, split_sentences
from ja_common.processes import die_with_parent
from tokenizer.encoder import SubwordEncoder

from . import builders as ex
from . import storage

CHUNK_CHARS = 192 << 10  # about 550 KB of Japanese text a chunk
NUM_SENTINELS = 100
_WRITE_BATCH = 1000  # rows per Arrow record batch
SHARD_BYTES = 500 << 20  # data file size


@dataclass(frozen=True)
class ExampleSpec:
    """Everything that decides the examples, besides the corpus and the tokenizer."""

    kind: str  # nsp, sop, packed, span
    sequence_length: int
    seed: int = 42
    short_seq_prob: float = 0.1
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    validation_percent: float = 0.0  # documents held out for evaluation

    @classmethod
    def from_preset(cls, preset, seed, validation_percent=0.0):
        return cls(
            kind=preset.example_kind,
            sequence_length=preset.sequence_length,
            seed=seed,
            short_seq_prob=preset.short_seq_prob,
            noise_density=preset.noise_density,
            mean_noise_span_length=preset.mean_noise_span_length,
            validation_percent=validation_percent or 0.0,
        )


def sentinel_ids(encoder, count=NUM_SENTINELS):
    """Ids of <extra_id_0>..: existing ones, or the ids they get when appended to the vocabulary."""
    ids, next_id = [], encoder.vocab_size
    for k in range(count):
        token = f"<extra_id_{k}>"
        if token in encoder.vocab:
            ids.append(encoder.vocab[token])
        else:
            ids.append(next_id)
            next_id += 1
    return ids


def largest_id(encoder, kind):
    """The largest id the examples can hold: T5's sentinels may lie past the vocabulary."""
    return max([encoder.vocab_size - 1] + (sentinel_ids(encoder) if kind == "span" else []))


# ---- building one chunk (runs in worker processes) ----

encoders = {}


def _encoder(tokenizer_dir):
    if tokenizer_dir not in encoders:
        encoders[tokenizer_dir] = SubwordEncoder(tokenizer_dir)
    return encoders[tokenizer_dir]


def tokenize_chunk(encoder, documents):
    """Documents (lists of sentences) -> a TokenizedText; word ids run on across the chunk.

    Sentences with no tokens and documents with no sentences are left out.
    """
    lines = [line for document in documents for line in document]
    words, words_per_line = encoder.splitter.split_many(lines)
    ids, tokens_per_word = encoder.encode_flat(words)
    word_ids = np.repeat(np.arange(len(words), dtype=np.int32), tokens_per_word)
    token_offsets = np.concatenate([[0], np.cumsum(tokens_per_word)])
    word_offsets = np.concatenate([[0], np.cumsum(words_per_line, dtype=np.int64)])
    tokens_per_line = np.diff(token_offsets[word_offsets])
    kept = tokens_per_line > 0
    document_of_line = np.repeat(np.arange(len(documents)), [len(d) for d in documents])
    sentences_per_document = np.bincount(document_of_line[kept], minlength=len(documents))
    sentences_per_document = sentences_per_document[sentences_per_document > 0]
    return ex.TokenizedText(
        ids=ids,
        word_ids=word_ids,
        sentence_starts=np.concatenate([[0], np.cumsum(tokens_per_line[kept])]).astype(np.int64),
        document_starts=np.concatenate([[0], np.cumsum(sentences_per_document)]).astype(np.int64),
    )


def build_columns(text, spec, encoder, chunk_index):
    """One chunk's examples as columns (see pretraining/data/builders.py); for the packed objectives
    the tokens left over after its last whole block (else None); and how many of the chunk's
    tokens the examples hold (packed: all but the leftover)."""
    cls_id, sep_id = encoder.token_id("[CLS]"), encoder.token_id("[SEP]")
    if spec.kind in ("nsp", "sop"):
        rng = random.Random(f"{spec.seed}:{chunk_index}")
        # half the room of a pair: two pieces of a long line make one whole example
        text = ex.cut_long_sentences(text, max(1, (spec.sequence_length - 2) // 2))
        order = spec.kind == "sop"
        pairs = ex.pair_ranges(text, spec.sequence_length, rng, order, spec.short_seq_prob)
        return ex.pair_columns(text, pairs, cls_id, sep_id, order), None, ex.covered_tokens(text, pairs)
    columns, leftover = pack_stream(ex.token_stream(text, cls_id, sep_id), spec, encoder, chunk_index)
    return columns, leftover, len(text.ids) - int((leftover[1] >= 0).sum())


def pack_stream(stream, spec, encoder, chunk_index):
    """Blocks (packed) or span-corruption pairs (span) of a token stream, and the tokens left over."""
    if spec.kind == "packed":
        return ex.packed_blocks(stream, spec.sequence_length)
    if spec.kind == "span":
        rng_np = np.random.default_rng([spec.seed, chunk_index])
        return ex.span_corruption(stream, spec.sequence_length, sentinel_ids(encoder), encoder.token_id("[SEP]"),
                                  rng_np, spec.noise_density, spec.mean_noise_span_length)
    raise ValueError(f"unknown example kind {spec.kind}")


def write_chunk(columns, schema, out_path):
    batch = _record_batch(storage.compact(columns), schema)
    with pa.OSFile(out_path, "wb") as sink, pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_table(pa.Table.from_batches([batch]), max_chunksize=_WRITE_BATCH)
    return batch.num_rows


# added to the chunk index: the held-out examples draw from random streams of their own
SPLIT_STREAM = {"train": 0, "validation": 1 << 30}


def split_path(path, split):
    """A chunk's Arrow file for ``split``: chunk-000001.arrow, chunk-000001.validation.arrow."""
    return path if split == "train" else path[: -len(".arrow")] + f".{split}.arrow"


def held_out(spec, chunk_index, documents):
    """Which documents of a chunk are held out: a fixed draw per (seed, chunk, document)."""
    if not spec.validation_percent:
        return np.zeros(len(documents), dtype=bool)
    return np.random.default_rng([spec.seed, chunk_index, 1]).random(len(documents)) < spec.validation_percent / 100


def build_chunk(task):
    """Build one chunk's examples into an Arrow file (its held-out documents' into a second one);
    returns (index, {split: (counts, leftover)})."""
    index, documents, tokenizer_dir, spec, out_path, schema = task
    encoder = _encoder(tokenizer_dir)
    documents = [[sentence for line in document for sentence in split_sentences(line)] for document in documents]
    held = held_out(spec, index, documents)
    splits = {"train": ~held, "validation": held} if spec.validation_percent else {"train": ~held}
    results = {}
    for split, chosen in splits.items():
        text = tokenize_chunk(encoder, [d for d, c in zip(documents, chosen) if c])
        columns, leftover, kept = build_columns(text, spec, encoder, index + SPLIT_STREAM[split])
        sentences_per_document = np.diff(text.document_starts)
        counts = {"examples": write_chunk(columns, schema, split_path(out_path, split)),
                  "tokens": len(text.ids), "tokens_in_examples": kept, "documents": len(sentences_per_document),
                  "one_sentence_documents": int((sentences_per_document == 1).sum())}
        results[split] = (counts, leftover)
    return index, results


_NUMPY_TYPES = {pa.int8(): np.int8, pa.int32(): np.int32, pa.uint16(): np.uint16, pa.int64(): np.int64}


def _arrow_array(values, arrow_type):
    # Array.from_buffers rather than pa.array: pa.array imports pandas (0.4 s) on first use
    if arrow_type == pa.bool_():  # Arrow keeps booleans as bits
        bits = np.packbits(np.asarray(values, dtype=bool), bitorder="little")
        return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(bits)])
    values = np.ascontiguousarray(values, dtype=_NUMPY_TYPES[arrow_type])
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])


def _record_batch(columns, schema):
    arrays = []
    for field in schema:
        column = columns[field.name]
        if isinstance(column, ex.ListColumn):
            offsets = _arrow_array(column.offsets, pa.int32())
            arrays.append(pa.ListArray.from_arrays(offsets, _arrow_array(column.values, field.type.value_type)))
        else:
            arrays.append(_arrow_array(column, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def worker_init(parent_pid):
    die_with_parent(parent_pid)  # a killed build leaves no workers running
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one Rust thread per worker: the workers fill the cores


class Split:
    """One split's data files, totals and packed leftovers while the chunks come in."""

    def __init__(self, folder, schema):
        self.schema = schema
        self.shards = ShardWriter(folder, schema)
        self.totals = dict.fromkeys(("examples", "tokens", "tokens_in_examples", "documents",
                                     "one_sentence_documents"), 0)
        self.leftovers = []

    def add(self, path, counts, leftover):
        for key, value in counts.items():
            self.totals[key] += value
        self.shards.append(path)
        self.leftovers.append(leftover)

    def finish(self, spec, encoder, stream, path):
        """Pack the chunks' leftover tokens, joined in order, into the last blocks: only the final
        remainder is dropped. Returns the split's record."""
        if spec.kind in ("packed", "span"):
            joined = ex.join_streams(self.leftovers)
            columns, remainder = pack_stream(joined, spec, encoder, stream)
            self.totals["examples"] += write_chunk(columns, self.schema, path)
            self.totals["tokens_in_examples"] += int((joined[1] >= 0).sum() - (remainder[1] >= 0).sum())
            self.shards.append(path)
        self.shards.close()
        return {"data_files": name_data_files(self.shards.folder, self.shards.names), **self.totals}


def plan_chunks(files, text_column=DEFAULT_TEXT_COLUMN, encoding_errors="strict", progress=None):
    """(index, documents) chunks of about CHUNK_CHARS characters, none spanning two files, streamed."""
    index = 0
    for path in files:
        chunk, size = [], 0
        for document in iter_documents(path, text_column, encoding_errors, progress):
            chunk.append(document)
            size += sum(map(len, document))
            if size >= CHUNK_CHARS:
                yield index, chunk
                index, chunk, size = index + 1, [], 0
        if chunk:
            yield index, chunk
            index += 1


def in_order(pool, function, tasks, window):
    """pool.imap without reading ahead: at most ``window`` tasks in flight (Pool.imap reads the whole
    task iterator at once, which would hold the corpus in memory)."""
    pending = collections.deque()
    for task in tasks:
        pending.append(pool.apply_async(function, (task,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


@contextlib.contextmanager
def built_chunks(tasks, num_proc):
    """``with built_chunks(tasks, n) as results``: build_chunk's results over the tasks, in task order
    (so any number of processes gives the same folder), from ``num_proc`` worker processes."""
    if num_proc == 1:
        yield map(build_chunk, tasks)
        return
    context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = context.Pool(num_proc, initializer=worker_init, initargs=(os.getpid(),))
    try:
        yield in_order(pool, build_chunk, tasks, 2 * num_proc)
    finally:
        pool.terminate()
        pool.join()


class ShardWriter:
    """Chunk files -> the data files of the examples folder, in chunk order, up to SHARD_BYTES each."""

    def __init__(self, folder, schema):
        os.makedirs(folder)
        self.folder, self.schema = folder, schema
        self.names, self._writer, self._bytes = [], None, 0

    def append(self, chunk_path):
        with pa.memory_map(chunk_path) as source:
            for batch in pa.ipc.open_stream(source):
                if self._writer is None or self._bytes >= SHARD_BYTES:
                    self._next_file()
                self._writer.write_batch(batch)
                self._bytes += batch.nbytes
        os.remove(chunk_path)

    def _next_file(self):
        self.close()
        self.names.append(f"data-{len(self.names):05d}.arrow")
        self._sink = pa.OSFile(os.path.join(self.folder, self.names[-1]), "wb")
        self._writer, self._bytes = pa.ipc.new_stream(self._sink, self.schema), 0

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = None


def name_data_files(folder, data_files):
    """data-00000.arrow ... -> data-00000-of-0000n.arrow ...; returns the new names, in order."""
    names = [f"data-{k:05d}-of-{len(data_files):05d}.arrow" for k in range(len(data_files))]
    for old, new in zip(data_files, names):
        os.rename(os.path.join(folder, old), os.path.join(folder, new))
    return names
