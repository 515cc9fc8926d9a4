"""The MeCab stage of tokenizer training: corpus -> files of space-separated words.

Each worker process streams its share of the corpus's documents (a byte range of plain text,
every n-th document of other inputs) through MeCab and writes one line of words per input
line, so memory stays flat whatever the corpus size. Workers also count characters, from
which the subword alphabet is chosen deterministically. With a DocumentSample only the
documents it draws are split.
"""

import multiprocessing as mp
import os
import hashlib
import queue
import traceback
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ja_common.processes import die_with_parent

from ja_common.corpus import DEFAULT_TEXT_COLUMN, plan_segments, segment_documents
from ja_common.errors import UserError
from .mecab import DictionaryNotInstalled, MecabWordSplitter

_PROGRESS_EVERY = 1 << 16
_BATCH_CHARS = 1 << 20


@dataclass
class SplitResult:
    word_files: list
    char_counts: Counter = field(default_factory=Counter)
    lines: int = 0
    words: int = 0
    bytes: int = 0
    documents: int = 0
    documents_split: int = 0
    characters_split: int = 0


@dataclass(frozen=True)
class DocumentSample:
    """An evenly drawn, seeded share of the documents: a document is drawn when a hash of the seed
    and its text falls below ``fraction``, so the draw is the same whatever the process count,
    the order or the format of the inputs."""

    fraction: float
    seed: int = 0

    def draws(self, document):
        digest = hashlib.blake2b("\n".join(document).encode("utf-8"), digest_size=8, key=str(self.seed).encode())
        return int.from_bytes(digest.digest(), "little") < self.fraction * 2**64


def _context():
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


class _CharCounter:
    """Character counts of written text, by code point with numpy (a Counter is 10x slower)."""

    def __init__(self):
        self.counts = np.zeros(0x110000, dtype=np.int64)

    def add(self, text):
        self.counts += np.bincount(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32), minlength=0x110000)

    def as_counter(self, exclude=" \n"):
        counts = Counter({chr(c): int(self.counts[c]) for c in np.flatnonzero(self.counts)})
        for c in exclude:
            counts.pop(c, None)
        return counts


def _split_shard(index, segments, out_path, splitter_kwargs, encoding_errors, text_column, sample, progress,
                 results, parent_pid):
    die_with_parent(parent_pid)
    try:
        splitter = MecabWordSplitter(**splitter_kwargs)
        chars, lines, words, unreported = _CharCounter(), 0, 0, 0
        documents = documents_split = characters_split = 0
        batch, batch_chars = [], 0

        def report(n):
            nonlocal unreported
            unreported += n
            if unreported >= _PROGRESS_EVERY:
                with progress.get_lock():
                    progress[index] += unreported
                unreported = 0

        def flush():
            nonlocal words, batch, batch_chars
            text = "\n".join(batch) + "\n"
            out.write(text)
            chars.add(text)
            words += text.count(" ") + len(batch)
            batch, batch_chars = [], 0

        with open(out_path, "w", encoding="utf-8") as out:
            for segment in segments:
                for document in segment_documents(segment, text_column, encoding_errors, report):
                    documents += 1
                    if sample and not sample.draws(document):
                        continue
                    documents_split += 1
                    for line in document:
                        characters_split += len(line)
                        text = splitter.wakati(line)
                        if text:
                            batch.append(text)
                            batch_chars += len(text)
                            lines += 1
                            if batch_chars >= _BATCH_CHARS:
                                flush()
            if batch:
                flush()
        with progress.get_lock():
            progress[index] += unreported
        results.put((index, "ok", (chars.as_counter(), lines, words, documents, documents_split, characters_split)))
    except (UserError, DictionaryNotInstalled, ValueError) as error:
        results.put((index, "user", str(error)))
    except BaseException:
        results.put((index, "crash", traceback.format_exc()))


def split_corpus(files, out_dir, num_workers, splitter_kwargs, encoding_errors="strict", show_progress=True,
                 text_column=DEFAULT_TEXT_COLUMN, sample=None):
    """Run MeCab over ``files`` (the documents ``sample`` draws, if given) in ``num_workers`` processes;
    word files go to ``out_dir``."""
    shards = plan_segments(files, num_workers)
    total = sum(segment.bytes for shard in shards for segment in shard)
    ctx = _context()
    progress = ctx.Array("q", len(shards))
    results = ctx.Queue()
    word_files = [os.path.join(out_dir, f"words-{i:05d}.txt") for i in range(len(shards))]
    workers = [
        ctx.Process(
            target=_split_shard,
            args=(i, shard, word_files[i], splitter_kwargs, encoding_errors, text_column, sample, progress, results,
                  os.getpid()),
            daemon=True,
        )
        for i, shard in enumerate(shards)
    ]
    for worker in workers:
        worker.start()
    result = SplitResult(word_files=word_files, bytes=total)
    pending = set(range(len(workers)))
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="MeCab", disable=not show_progress)
    try:
        while pending:
            try:
                index, status, payload = results.get(timeout=0.2)
            except queue.Empty:
                dead = [i for i in pending if not workers[i].is_alive() and workers[i].exitcode not in (0, None)]
                if dead:
                    raise RuntimeError(f"MeCab worker {dead[0]} died (exit code {workers[dead[0]].exitcode})")
            else:
                pending.discard(index)
                if status == "user":
                    raise UserError(payload)
                if status == "crash":
                    raise RuntimeError(f"MeCab worker {index} failed:\n{payload}")
                chars, *counts = payload
                result.char_counts.update(chars)
                for name, count in zip(("lines", "words", "documents", "documents_split", "characters_split"), counts):
                    setattr(result, name, getattr(result, name) + count)
            bar.n = min(total, sum(progress))
            bar.refresh()
        bar.n = total
        bar.refresh()
    finally:
        bar.close()
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()
    return result
