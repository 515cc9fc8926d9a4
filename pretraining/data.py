"""Corpus + tokenizer -> pretraining examples in a ``datasets`` folder, built once and cached.

The corpus is cut into chunks of about 512 KB on document boundaries; worker processes
split each chunk into MeCab words, encode them with the Rust subword model, build the
examples of the objective (pretraining/examples.py) with a random generator seeded by
(seed, chunk), and write Arrow files. The result is independent of the number of
workers, and memory is bounded by the chunk size, not the corpus size.

The folder is keyed by a fingerprint of the corpus files (path, size, mtime), the
tokenizer files, the objective and its lengths, the seed and BUILDER_VERSION. It is
built under a temporary name and renamed into place with its ``examples_info.json``,
so an interrupted build is never taken for a complete one.
"""

import contextlib
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import random
import shutil
import socket
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from tokenizer.corpus import expand_inputs, plan_chunks, read_documents
from tokenizer.encoder import SubwordEncoder
from tokenizer.errors import UserError

from . import examples as ex

BUILDER_VERSION = 1
CHUNK_BYTES = 512 << 10
INFO_FILE = "examples_info.json"
NUM_SENTINELS = 100
_WRITE_BATCH = 1000


@dataclass(frozen=True)
class ExampleSpec:
    """Everything that decides the examples, besides the corpus and the tokenizer."""

    kind: str  # nsp, sop, packed, span
    sequence_length: int
    seed: int = 42
    short_seq_prob: float = 0.1
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0

    @classmethod
    def from_preset(cls, preset, seed):
        return cls(
            kind=preset.example_kind,
            sequence_length=preset.sequence_length,
            seed=seed,
            short_seq_prob=preset.short_seq_prob,
            noise_density=preset.noise_density,
            mean_noise_span_length=preset.mean_noise_span_length,
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


def tokenize_documents(encoder, documents):
    """Text documents -> documents of (ids, word_ids) lists; word ids run on across the chunk."""
    words, words_per_line = [], []
    for document in documents:
        for line in document:
            line_words = encoder.splitter.split(line)
            words.extend(line_words)
            words_per_line.append(len(line_words))
    word_ids = encoder.encode_word_ids(words)
    lengths = np.fromiter(map(len, word_ids), dtype=np.int64, count=len(word_ids))
    flat_ids = np.fromiter(itertools.chain.from_iterable(word_ids), dtype=np.int32, count=int(lengths.sum()))
    flat_wids = np.repeat(np.arange(len(words), dtype=np.int32), lengths)
    word_bounds = np.concatenate([[0], np.cumsum(words_per_line)])
    token_bounds = np.concatenate([[0], np.cumsum(lengths)])[word_bounds].tolist()
    result, k = [], 0
    for document in documents:
        sentences = []
        for _ in document:
            start, end = token_bounds[k], token_bounds[k + 1]
            k += 1
            if end > start:
                sentences.append((flat_ids[start:end].tolist(), flat_wids[start:end].tolist()))
        if sentences:
            result.append(sentences)
    return result


def iter_examples(documents, spec, encoder, chunk_index):
    cls_id, sep_id = encoder.token_id("[CLS]"), encoder.token_id("[SEP]")
    rng = random.Random(f"{spec.seed}:{chunk_index}")
    if spec.kind in ("nsp", "sop"):
        return ex.sentence_pairs(documents, spec.sequence_length, cls_id, sep_id, rng,
                                 order_prediction=spec.kind == "sop", short_seq_prob=spec.short_seq_prob)
    if spec.kind == "packed":
        return ex.packed_blocks(documents, spec.sequence_length, cls_id, sep_id)
    if spec.kind == "span":
        rng_np = np.random.default_rng([spec.seed, chunk_index])
        return ex.span_corruption(documents, spec.sequence_length, cls_id, sep_id, sentinel_ids(encoder), sep_id,
                                  rng_np, spec.noise_density, spec.mean_noise_span_length)
    raise ValueError(f"unknown example kind {spec.kind}")


def build_chunk(task):
    """Build one chunk's examples into an Arrow file; returns (index, examples, tokens, bytes)."""
    index, segment, tokenizer_dir, spec, out_path, encoding_errors = task
    encoder = _encoder(tokenizer_dir)
    documents = tokenize_documents(encoder, list(read_documents(segment, encoding_errors)))
    schema = SCHEMAS[spec.kind]
    count = 0
    with pa.OSFile(out_path, "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        batch = []
        for example in iter_examples(documents, spec, encoder, index):
            batch.append(example)
            if len(batch) == _WRITE_BATCH:
                writer.write_batch(_to_batch(batch, schema))
                count += len(batch)
                batch = []
        if batch:
            writer.write_batch(_to_batch(batch, schema))
            count += len(batch)
    tokens = sum(len(s[0]) for d in documents for s in d)
    return index, count, tokens, segment.end - segment.start


_NUMPY_TYPES = {pa.int8(): np.int8, pa.int32(): np.int32}


def _to_batch(examples, schema):
    """Examples -> an Arrow record batch, list columns built from flat numpy values and offsets."""
    arrays = []
    for field in schema:
        column = [e[field.name] for e in examples]
        if pa.types.is_list(field.type):
            dtype = _NUMPY_TYPES[field.type.value_type]
            lengths = np.fromiter(map(len, column), dtype=np.int64, count=len(column))
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            if isinstance(column[0], np.ndarray):
                values = np.concatenate(column).astype(dtype, copy=False)
            else:
                values = np.fromiter(itertools.chain.from_iterable(column), dtype=dtype, count=int(offsets[-1]))
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)))
        else:
            arrays.append(pa.array(np.asarray(column, dtype=_NUMPY_TYPES[field.type])))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _worker_init():
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
    """Build (or reuse) the examples; returns the folder that ``datasets.load_from_disk`` opens.

    ``encoder``: the SubwordEncoder of ``tokenizer_dir`` when the caller already has one.
    """
    if overwrite_cache and disable_overwrite_cache:
        raise UserError("--overwrite_cache and --disable_overwrite_cache contradict each other: pass one")
    files = expand_inputs(input_files)
    encoder = encoder or SubwordEncoder(tokenizer_dir)
    if spec.kind == "span":
        raw_length, _ = ex.span_lengths(spec.sequence_length, spec.noise_density, spec.mean_noise_span_length)
        spans = round(round(raw_length * spec.noise_density) / spec.mean_noise_span_length)
        if spans > NUM_SENTINELS:
            raise UserError(f"sequence-length {spec.sequence_length} needs {spans} sentinels; at most {NUM_SENTINELS}")
    fingerprint = examples_fingerprint(files, tokenizer_dir, spec)
    dataset_dir = dataset_dir or os.path.join(default_cache_root(), f"{spec.kind}-{spec.sequence_length}-{fingerprint}")
    if _check_existing(dataset_dir, fingerprint, overwrite_cache, disable_overwrite_cache):
        return dataset_dir
    info = _build(files, tokenizer_dir, spec, encoder, dataset_dir, fingerprint, num_proc, encoding_errors,
                  show_progress)
    if info["examples"] == 0:
        raise UserError(
            f"the corpus gave no {spec.kind} examples of length {spec.sequence_length}: it is too small for this "
            "sequence length"
        )
    return dataset_dir


def _build(files, tokenizer_dir, spec, encoder, dataset_dir, fingerprint, num_proc, encoding_errors, show_progress):
    from datasets import Dataset, concatenate_datasets

    started = time.time()
    parent = os.path.dirname(os.path.abspath(dataset_dir))
    os.makedirs(parent, exist_ok=True)
    _remove_dead_partials(parent, os.path.basename(dataset_dir))
    staging = tempfile.mkdtemp(prefix=f"{_partial_prefix(os.path.basename(dataset_dir))}{os.getpid()}-", dir=parent)
    try:
        chunks = plan_chunks(files, CHUNK_BYTES)
        arrow_dir = os.path.join(staging, "chunks")
        os.makedirs(arrow_dir)
        tasks = [(i, c, os.path.abspath(tokenizer_dir), spec, os.path.join(arrow_dir, f"{i:06d}.arrow"), encoding_errors)
                 for i, c in enumerate(chunks)]
        num_proc = max(1, min(num_proc or available_cpus(), len(tasks)))
        totals = {"examples": 0, "tokens": 0}
        bar = tqdm(total=sum(c.end - c.start for c in chunks), unit="B", unit_scale=True,
                   desc=f"Building {spec.kind} examples", disable=not show_progress)
        with bar:
            if num_proc == 1:
                results = map(build_chunk, tasks)
                pool = None
            else:
                ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
                pool = ctx.Pool(num_proc, initializer=_worker_init)
                results = pool.imap_unordered(build_chunk, tasks)
            try:
                for _, count, tokens, size in results:
                    totals["examples"] += count
                    totals["tokens"] += tokens
                    bar.update(size)
            finally:
                if pool is not None:
                    pool.terminate()
                    pool.join()
        if totals["examples"] == 0:
            return totals
        parts = [Dataset.from_file(t[4]) for t in tasks]
        dataset = concatenate_datasets([p for p in parts if len(p)])
        final = os.path.join(staging, "dataset")
        with _datasets_progress(show_progress):
            dataset.save_to_disk(final)
        del dataset, parts
        info = {
            "fingerprint": fingerprint,
            "builder_version": BUILDER_VERSION,
            "spec": asdict(spec),
            "tokenizer_dir": os.path.abspath(tokenizer_dir),
            "vocab_size": encoder.vocab_size,
            "corpus": [os.path.abspath(p) for p in files],
            "examples": totals["examples"],
            "tokens": totals["tokens"],
            "build_seconds": round(time.time() - started, 2),
        }
        if spec.kind == "span":
            info["sentinel_ids"] = sentinel_ids(encoder)
        with open(os.path.join(final, INFO_FILE), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
        _install(final, dataset_dir)
        return info
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _partial_prefix(name):
    return f".{name}.partial-{socket.gethostname()}-"


def _remove_dead_partials(parent, name):
    """Remove what builds on this host left when they were killed (their process is gone)."""
    prefix = _partial_prefix(name)
    for entry in os.listdir(parent):
        if entry.startswith(prefix):
            pid = entry[len(prefix):].split("-")[0]
            if pid.isdigit() and not _process_alive(int(pid)):
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _datasets_progress(show):
    from datasets.utils import logging as datasets_logging

    was_enabled = datasets_logging.is_progress_bar_enabled()
    if not show:
        datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            datasets_logging.enable_progress_bar()


def _install(built, dataset_dir):
    """Rename the finished folder into place; an older cache there is replaced."""
    if os.path.exists(dataset_dir):
        old = dataset_dir.rstrip("/") + f".old-{os.getpid()}"
        os.rename(dataset_dir, old)
        os.rename(built, dataset_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        try:
            os.rename(built, dataset_dir)
        except OSError:
            # another process (another node on a shared filesystem) installed it first
            if read_info(dataset_dir) is None:
                raise


def load_examples(dataset_dir, spec=None):
    """Open a prepared examples folder, checking that it fits the preset when one is given."""
    from datasets import load_from_disk

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
    return load_from_disk(dataset_dir), info


def available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
