"""Corpus + tokenizer -> pretraining examples in a folder of Arrow files, built once and cached.

The corpus is cut into chunks of about 512 KB on document boundaries. Worker processes
split each chunk's lines into MeCab words, encode them with the subword model into one
flat array (tokenizer/encoder.py), build the examples of the objective as numpy arrays
(pretraining/examples.py) with a random generator seeded by (seed, chunk), and write an
Arrow file. The main process copies the chunk files, in chunk order, into the folder's
data files. The result is independent of the number of workers, and memory is bounded
by the chunk size, not the corpus size.

The folder is keyed by a fingerprint of the corpus files (path, size, mtime), the
tokenizer files, the objective and its lengths, the seed and BUILDER_VERSION. It is
built under a temporary name and renamed into place with its ``examples_info.json``,
so an interrupted build is never taken for a complete one.
"""

import hashlib
import json
import multiprocessing as mp
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from ja_common.files import replace_directory, staging_directory
from ja_common.locks import exclusive
from ja_common.processes import die_with_parent
from tokenizer.corpus import expand_inputs, plan_chunks, read_documents
from tokenizer.encoder import SubwordEncoder
from tokenizer.errors import UserError

from . import examples as ex

BUILDER_VERSION = 3  # 3: long sentences cut for the pair objectives
CHUNK_BYTES = 512 << 10
INFO_FILE = "examples_info.json"
VALIDATION_DIR = "validation"  # the held-out split's data files, inside the examples folder
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


SCHEMAS = {
    "nsp": pa.schema([("input_ids", pa.list_(pa.int32())), ("word_ids", pa.list_(pa.int32())),
                      ("token_type_ids", pa.list_(pa.int8())), ("next_sentence_label", pa.int8())]),
    "sop": pa.schema([("input_ids", pa.list_(pa.int32())), ("word_ids", pa.list_(pa.int32())),
                      ("token_type_ids", pa.list_(pa.int8())), ("sentence_order_label", pa.int8())]),
    "packed": pa.schema([("input_ids", pa.list_(pa.int32())), ("word_ids", pa.list_(pa.int32()))]),
    "span": pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))]),
}


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


def tokenizer_fingerprint(tokenizer_dir):
    digest = hashlib.sha256()
    for name in sorted(os.listdir(tokenizer_dir)):
        if name in ("tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt", "special_tokens_map.json"):
            with open(os.path.join(tokenizer_dir, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()


def examples_fingerprint(files, tokenizer_dir, spec):
    key = {
        "builder_version": BUILDER_VERSION,
        "chunk_bytes": CHUNK_BYTES,
        "corpus": [[os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns] for p in files],
        "tokenizer": tokenizer_fingerprint(tokenizer_dir),
        "spec": asdict(spec),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def default_cache_root():
    root = os.environ.get("JA_PRETRAINING_CACHE")
    if root:
        return root
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ja_pretraining", "examples")


def read_info(dataset_dir):
    path = os.path.join(dataset_dir, INFO_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---- building one chunk (runs in worker processes) ----

_encoders = {}


def _encoder(tokenizer_dir):
    if tokenizer_dir not in _encoders:
        _encoders[tokenizer_dir] = SubwordEncoder(tokenizer_dir)
    return _encoders[tokenizer_dir]


def tokenize_chunk(encoder, documents):
    """Text documents -> a TokenizedText; word ids run on across the chunk.

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
    """One chunk's examples as columns (see pretraining/examples.py); for the packed objectives
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


def _write_chunk(columns, schema, out_path):
    batch = _record_batch(columns, schema)
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
    returns (index, bytes, {split: (counts, leftover)})."""
    index, segment, tokenizer_dir, spec, out_path, encoding_errors = task
    encoder = _encoder(tokenizer_dir)
    documents = list(read_documents(segment, encoding_errors))
    held = held_out(spec, index, documents)
    splits = {"train": ~held, "validation": held} if spec.validation_percent else {"train": ~held}
    results = {}
    for split, chosen in splits.items():
        text = tokenize_chunk(encoder, [d for d, c in zip(documents, chosen) if c])
        columns, leftover, kept = build_columns(text, spec, encoder, index + SPLIT_STREAM[split])
        sentences_per_document = np.diff(text.document_starts)
        counts = {"examples": _write_chunk(columns, SCHEMAS[spec.kind], split_path(out_path, split)),
                  "tokens": len(text.ids), "tokens_in_examples": kept, "documents": len(sentences_per_document),
                  "one_sentence_documents": int((sentences_per_document == 1).sum())}
        results[split] = (counts, leftover)
    return index, segment.end - segment.start, results


_NUMPY_TYPES = {pa.int8(): np.int8, pa.int32(): np.int32}


def _arrow_array(values, arrow_type):
    # Array.from_buffers rather than pa.array: pa.array imports pandas (0.4 s) on first use
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


def _worker_init(parent_pid):
    die_with_parent(parent_pid)  # a killed build leaves no workers running
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one Rust thread per worker: the workers fill the cores


# ---- the cache ----

def _check_existing(dataset_dir, fingerprint, overwrite_cache, disable_overwrite_cache):
    """Returns True when the folder already holds these examples."""
    if not os.path.exists(dataset_dir):
        if disable_overwrite_cache:
            raise UserError(
                f"--disable_overwrite_cache: no examples cache at {dataset_dir}; run once without it to build one"
            )
        return False
    info = read_info(dataset_dir)
    if info is None:
        if os.path.isdir(dataset_dir) and not os.listdir(dataset_dir):
            return False
        raise UserError(f"--dataset_dir {dataset_dir} exists but is not an examples folder built by this project")
    if info.get("fingerprint") == fingerprint and not overwrite_cache:
        return True
    if disable_overwrite_cache:
        raise UserError(
            f"--disable_overwrite_cache: the examples in {dataset_dir} were built from another corpus, tokenizer or "
            "preset; drop the flag to rebuild them, or point --dataset_dir at the matching folder"
        )
    return False


def prepare_examples(input_files, tokenizer_dir, spec, dataset_dir=None, num_proc=None, overwrite_cache=False,
                     disable_overwrite_cache=False, encoding_errors="strict", show_progress=True, encoder=None):
    """Build (or reuse) the examples; returns the folder that ``load_examples`` opens.

    ``encoder``: the SubwordEncoder of ``tokenizer_dir`` when the caller already has one.
    """
    if overwrite_cache and disable_overwrite_cache:
        raise UserError("--overwrite_cache and --disable_overwrite_cache contradict each other: pass one")
    files = expand_inputs(input_files)
    encoder = encoder or SubwordEncoder(tokenizer_dir)
    if spec.kind == "span":
        raw_length, _ = ex.span_lengths(spec.sequence_length, spec.noise_density, spec.mean_noise_span_length)
        _, spans = ex.noise_counts(raw_length, spec.noise_density, spec.mean_noise_span_length)
        if spans > NUM_SENTINELS:
            raise UserError(f"sequence-length {spec.sequence_length} needs {spans} sentinels; at most {NUM_SENTINELS}")
    started = time.time()
    fingerprint = examples_fingerprint(files, tokenizer_dir, spec)
    dataset_dir = dataset_dir or os.path.join(default_cache_root(), f"{spec.kind}-{spec.sequence_length}-{fingerprint}")
    if _check_existing(dataset_dir, fingerprint, overwrite_cache, disable_overwrite_cache):
        return dataset_dir
    # one builder at a time (other runs, other nodes on a shared filesystem): the others wait, then load
    with exclusive(dataset_dir, on_wait=lambda lock: print(f"waiting for another run building {dataset_dir} "
                                                           f"(lock {lock})", flush=True)):
        if _check_existing(dataset_dir, fingerprint, False, disable_overwrite_cache):
            if not overwrite_cache or _built_after(dataset_dir, started):
                return dataset_dir
        info = _build(files, tokenizer_dir, spec, encoder, dataset_dir, fingerprint, num_proc, encoding_errors,
                      show_progress)
    if info["examples"] == 0:
        raise UserError(
            f"the corpus gave no {spec.kind} examples of length {spec.sequence_length}: it is too small for this "
            "sequence length"
        )
    return dataset_dir


class _Split:
    """One split's data files, totals and packed leftovers while the chunks come in."""

    def __init__(self, folder, kind):
        self.shards = _ShardWriter(folder, SCHEMAS[kind])
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
            self.totals["examples"] += _write_chunk(columns, SCHEMAS[spec.kind], path)
            self.totals["tokens_in_examples"] += int((joined[1] >= 0).sum() - (remainder[1] >= 0).sum())
            self.shards.append(path)
        self.shards.close()
        return {"data_files": _name_data_files(self.shards.folder, self.shards.names), **self.totals}


def _build(files, tokenizer_dir, spec, encoder, dataset_dir, fingerprint, num_proc, encoding_errors, show_progress):
    started = time.time()
    with staging_directory(dataset_dir) as staging:
        chunks = plan_chunks(files, CHUNK_BYTES)
        tasks = [(i, c, os.path.abspath(tokenizer_dir), spec, os.path.join(staging, f"chunk-{i:06d}.arrow"),
                  encoding_errors) for i, c in enumerate(chunks)]
        final = os.path.join(staging, "dataset")
        splits = {"train": _Split(final, spec.kind)}
        if spec.validation_percent:
            splits["validation"] = _Split(os.path.join(final, VALIDATION_DIR), spec.kind)
        num_proc = max(1, min(num_proc or available_cpus(), len(tasks)))
        _encoders.setdefault(os.path.abspath(tokenizer_dir), encoder)  # forked workers start with it loaded
        if num_proc == 1:
            results = map(build_chunk, tasks)
            pool = None
        else:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            pool = ctx.Pool(num_proc, initializer=_worker_init, initargs=(os.getpid(),))
            results = pool.imap(build_chunk, tasks)  # in chunk order, so any num_proc gives the same folder
        try:
            from tqdm.auto import tqdm  # imported once the workers run: it takes 0.1 s

            with tqdm(total=sum(c.end - c.start for c in chunks), unit="B", unit_scale=True,
                      desc=f"Building {spec.kind} examples", disable=not show_progress) as bar:
                for index, size, by_split in results:
                    for split, (counts, leftover) in by_split.items():
                        splits[split].add(split_path(tasks[index][4], split), counts, leftover)
                    bar.update(size)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
        records = {split: splits[split].finish(spec, encoder, len(chunks) + SPLIT_STREAM[split],
                                                os.path.join(staging, f"leftovers-{split}.arrow"))
                   for split in splits}
        if records["train"]["examples"] == 0:
            return records["train"]
        if "validation" in records and records["validation"]["examples"] == 0:
            raise UserError(f"--validation_split_percentage {spec.validation_percent} held out no whole "
                            f"{spec.kind} example: raise it, or give --validation_file")
        info = {
            "fingerprint": fingerprint,
            "builder_version": BUILDER_VERSION,
            "spec": asdict(spec),
            "tokenizer_dir": os.path.abspath(tokenizer_dir),
            "vocab_size": encoder.vocab_size,
            "corpus": [os.path.abspath(p) for p in files],
            **records["train"],
            "build_seconds": round(time.time() - started, 2),
        }
        if "validation" in records:
            info["validation"] = records["validation"]
        if spec.kind == "span":
            info["sentinel_ids"] = sentinel_ids(encoder)
        with open(os.path.join(final, INFO_FILE), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
        replace_directory(final, dataset_dir)
        _report(info, show_progress)
        return info


def _report(info, show_progress):
    """One line of what the build kept; a warning when pair objectives found no sentence pairs to make."""
    kind, tokens, kept = info["spec"]["kind"], info["tokens"], info["tokens_in_examples"]
    if show_progress:
        print(f"{info['examples']:,} {kind} examples hold {kept:,} of the corpus's {tokens:,} tokens "
              f"({100 * kept / max(tokens, 1):.1f}%; {tokens - kept:,} dropped)", flush=True)
    if kind in ("nsp", "sop") and info["documents"] and info["one_sentence_documents"] == info["documents"]:
        print(f"warning: every document of the corpus has one sentence: {kind.upper()} examples need at least two "
              "sentences a document (one sentence a line, a blank line between documents)", file=sys.stderr,
              flush=True)


class _ShardWriter:
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


def _name_data_files(folder, data_files):
    """data-00000.arrow ... -> data-00000-of-0000n.arrow ...; returns the new names, in order."""
    names = [f"data-{k:05d}-of-{len(data_files):05d}.arrow" for k in range(len(data_files))]
    for old, new in zip(data_files, names):
        os.rename(os.path.join(folder, old), os.path.join(folder, new))
    return names


def _built_after(dataset_dir, moment):
    """True when the folder was installed after ``moment`` (by the run this one waited for)."""
    return os.path.getmtime(os.path.join(dataset_dir, INFO_FILE)) >= moment


def load_examples(dataset_dir, spec=None, split="train"):
    """Open a prepared examples folder as a ``datasets.Dataset``, checking that it fits the preset when one is given.

    The data files are Arrow streams, the format of datasets' own cache files: ``Dataset.from_file``
    memory-maps each one, nothing is copied.
    """
    from datasets import Dataset, concatenate_datasets

    info = read_info(dataset_dir)
    if info is None:
        raise UserError(f"--dataset_dir {dataset_dir} holds no examples built by this project (no {INFO_FILE})")
    if spec is not None:
        built = info["spec"]
        if built["kind"] != spec.kind or built["sequence_length"] != spec.sequence_length:
            raise UserError(
                f"--dataset_dir {dataset_dir} holds {built['kind']} examples of length {built['sequence_length']}, "
                f"but the preset needs {spec.kind} examples of length {spec.sequence_length}"
            )
    folder = dataset_dir
    if split == "validation":
        if "validation" not in info:
            raise UserError(f"--dataset_dir {dataset_dir} holds no held-out split: build it with "
                            "--validation_split_percentage, or give --validation_file")
        info, folder = dict(info, **info["validation"]), os.path.join(dataset_dir, VALIDATION_DIR)
    # folders built before data_files was recorded hold the same files under the same names
    names = info.get("data_files") or sorted(n for n in os.listdir(folder) if re.fullmatch(r"data-\d+-of-\d+\.arrow", n))
    if not names:
        raise UserError(f"--dataset_dir {dataset_dir} holds no data files: delete it and build the examples again")
    parts = [Dataset.from_file(os.path.join(folder, name)) for name in names]
    return (parts[0] if len(parts) == 1 else concatenate_datasets(parts)), info


def available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
