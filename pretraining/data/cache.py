"""The examples cache: corpus + tokenizer -> a folder of examples, built once (pretraining/data/build.py),
installed whole, reused by fingerprint, opened as a ``datasets.Dataset``.

The folder is keyed by a fingerprint of the corpus files (path, size, mtime), the text
column, the tokenizer files, the objective and its lengths, the seed and BUILDER_VERSION. It
is built under a temporary name and renamed into place with its ``examples_info.json``,
so an interrupted build is never taken for a complete one.
"""

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import asdict

from ja_common.corpus import DEFAULT_TEXT_COLUMN, expand_inputs, input_bytes, input_signature
from ja_common.errors import UserError, disk_full
from ja_common.files import replace_directory, staging_directory
from ja_common.locks import exclusive
from tokenizer.encoder import SubwordEncoder

from . import build
from . import builders as ex
from . import storage

from .mixing import MixedExamples, is_mixture, read_mixture

BUILDER_VERSION = 4  # 3: long sentences cut for the pair objectives; 4: compact columns, any input format
INFO_FILE = "examples_info.json"
VALIDATION_DIR = "validation"  # the held-out split's data files, inside the examples folder


def tokenizer_fingerprint(tokenizer_dir):
    digest = hashlib.sha256()
    for name in sorted(os.listdir(tokenizer_dir)):
        if name in ("tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt", "special_tokens_map.json"):
            with open(os.path.join(tokenizer_dir, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()


def examples_fingerprint(files, tokenizer_dir, spec, text_column=DEFAULT_TEXT_COLUMN):
    key = {
        "builder_version": BUILDER_VERSION,
        "chunk_chars": build.CHUNK_CHARS,
        "corpus": [input_signature(p) for p in files],
        "text_column": text_column,
        "tokenizer": tokenizer_fingerprint(tokenizer_dir),
        "spec": asdict(spec),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def examples_identity(dataset_dir):
    """What a run trained on, as a checkpoint records it: the folder's fingerprint (its corpus files,
    tokenizer and spec), or for a mix the fingerprints and weights of its sources."""
    if not is_mixture(dataset_dir):
        return read_info(dataset_dir)["fingerprint"]
    sources = [[read_info(s["examples"])["fingerprint"], s["weight"]] for s in read_mixture(dataset_dir)]
    return "mix-" + hashlib.sha256(json.dumps(sources).encode()).hexdigest()[:24]


def check_examples_tokenizer(dataset_dir, tokenizer_dir, encoder):
    """Examples are the ids of one tokenizer: another one would train a model that reads other words."""
    infos = [read_info(s["examples"]) for s in read_mixture(dataset_dir)] if is_mixture(dataset_dir) else \
        [read_info(dataset_dir)]
    fingerprint = tokenizer_fingerprint(tokenizer_dir)
    for info in filter(None, infos):
        # folders built before the tokenizer's fingerprint was recorded: its vocabulary size tells most
        same = info["tokenizer"] == fingerprint if "tokenizer" in info else info["vocab_size"] == encoder.vocab_size
        if not same:
            raise UserError(f"--dataset_dir {dataset_dir} holds examples of another tokenizer ({info['tokenizer_dir']}, "
                            f"{info['vocab_size']} entries) than --tokenizer_dir {tokenizer_dir} ({encoder.vocab_size}): "
                            "give the tokenizer they were built with, or build them again with --input_file")


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
                     disable_overwrite_cache=False, encoding_errors="strict", show_progress=True, encoder=None,
                     text_column=DEFAULT_TEXT_COLUMN):
    """Build (or reuse) the examples; returns the folder that ``load_examples`` opens.

    ``encoder``: the SubwordEncoder of ``tokenizer_dir`` when the caller already has one.
    ``text_column``: the documents' column in .jsonl, .parquet and datasets inputs.
    """
    if overwrite_cache and disable_overwrite_cache:
        raise UserError("--overwrite_cache and --disable_overwrite_cache contradict each other: pass one")
    files = expand_inputs(input_files)
    encoder = encoder or SubwordEncoder(tokenizer_dir)
    if spec.kind == "span":
        raw_length, _ = ex.span_lengths(spec.sequence_length, spec.noise_density, spec.mean_noise_span_length)
        _, spans = ex.noise_counts(raw_length, spec.noise_density, spec.mean_noise_span_length)
        if spans > build.NUM_SENTINELS:
            raise UserError(f"sequence-length {spec.sequence_length} needs {spans} sentinels; "
                            f"at most {build.NUM_SENTINELS}")
    started = time.time()
    fingerprint = examples_fingerprint(files, tokenizer_dir, spec, text_column)
    dataset_dir = dataset_dir or os.path.join(default_cache_root(), f"{spec.kind}-{spec.sequence_length}-{fingerprint}")
    if _check_existing(dataset_dir, fingerprint, overwrite_cache, disable_overwrite_cache):
        return dataset_dir
    # one builder at a time (other runs, other nodes on a shared filesystem): the others wait, then load
    with exclusive(dataset_dir, on_wait=lambda lock: print(f"waiting for another run building {dataset_dir} "
                                                           f"(lock {lock})", flush=True)):
        if _check_existing(dataset_dir, fingerprint, False, disable_overwrite_cache):
            if not overwrite_cache or _built_after(dataset_dir, started):
                return dataset_dir
        try:
            info = _build(files, tokenizer_dir, spec, encoder, dataset_dir, fingerprint, num_proc, encoding_errors,
                          show_progress, text_column)
        except OSError as error:
            if not disk_full(error):
                raise
            raise UserError(f"building the examples in {dataset_dir} failed (the disk is full); nothing of them was "
                            "kept: free space (or give --dataset_dir on a larger disk), then run again") from None
    if info["examples"] == 0 and info.get("tokens", 1) == 0:
        raise UserError(f"the corpus has no text: every document of {', '.join(files)} is blank")
    if info["examples"] == 0:
        raise UserError(
            f"the corpus gave no {spec.kind} examples of length {spec.sequence_length}: it is too small for this "
            "sequence length"
        )
    return dataset_dir


def _build(files, tokenizer_dir, spec, encoder, dataset_dir, fingerprint, num_proc, encoding_errors, show_progress,
           text_column):
    started = time.time()
    from tqdm.auto import tqdm

    encoder.splitter  # MeCab opened before any work (a missing dictionary stops here); forked workers inherit it
    with staging_directory(dataset_dir) as staging, \
            tqdm(total=sum(map(input_bytes, files)), unit="B", unit_scale=True,
                 desc=f"Building {spec.kind} examples", disable=not show_progress) as bar:
        schema = storage.schema(spec.kind, storage.id_type(build.largest_id(encoder, spec.kind)))
        chunk_path = lambda i: os.path.join(staging, f"chunk-{i:06d}.arrow")  # noqa: E731
        tasks = ((i, documents, os.path.abspath(tokenizer_dir), spec, chunk_path(i), schema)
                 for i, documents in build.plan_chunks(files, text_column, encoding_errors, bar.update))
        final = os.path.join(staging, "dataset")
        splits = {"train": build.Split(final, schema)}
        if spec.validation_percent:
            splits["validation"] = build.Split(os.path.join(final, VALIDATION_DIR), schema)
        num_proc = max(1, min(num_proc or available_cpus(), -(-bar.total // build.CHUNK_CHARS)))
        build.encoders.setdefault(os.path.abspath(tokenizer_dir), encoder)  # forked workers start with it loaded
        chunks = 0
        with build.built_chunks(tasks, num_proc) as results:
            for index, by_split in results:
                for split, (counts, leftover) in by_split.items():
                    splits[split].add(build.split_path(chunk_path(index), split), counts, leftover)
                chunks += 1
        records = {split: splits[split].finish(spec, encoder, chunks + build.SPLIT_STREAM[split],
                                                os.path.join(staging, f"leftovers-{split}.arrow"))
                   for split in splits}
        if records["train"]["examples"] == 0:
            return records["train"]  # prepare_examples says why
        if "validation" in records and records["validation"]["examples"] == 0:
            raise UserError(f"--validation_split_percentage {spec.validation_percent} held out no whole "
                            f"{spec.kind} example: raise it, or give --validation_file")
        info = {
            "fingerprint": fingerprint,
            "builder_version": BUILDER_VERSION,
            "spec": asdict(spec),
            "tokenizer_dir": os.path.abspath(tokenizer_dir),
            "tokenizer": tokenizer_fingerprint(tokenizer_dir),
            "vocab_size": encoder.vocab_size,
            "corpus": [os.path.abspath(p) for p in files],
            "text_column": text_column,
            "id_type": str(schema.field("input_ids").type.value_type),
            **records["train"],
            "build_seconds": round(time.time() - started, 2),
        }
        if "validation" in records:
            info["validation"] = records["validation"]
        if spec.kind == "span":
            info["sentinel_ids"] = build.sentinel_ids(encoder)
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


def _built_after(dataset_dir, moment):
    """True when the folder was installed after ``moment`` (by the run this one waited for)."""
    return os.path.getmtime(os.path.join(dataset_dir, INFO_FILE)) >= moment


def load_examples(dataset_dir, spec=None, split="train"):
    """Open a prepared examples folder as a ``datasets.Dataset`` (a mixture's as MixedExamples), checking
    that it fits the preset when one is given.

    The data files are Arrow streams, the format of datasets' own cache files: ``Dataset.from_file``
    memory-maps each one, nothing is copied.
    """
    from datasets import Dataset, concatenate_datasets

    if is_mixture(dataset_dir):
        mixture = read_mixture(dataset_dir)
        parts = [load_examples(source["examples"], spec, split) for source in mixture]
        weights = None if split == "validation" else [source["weight"] for source in mixture]
        mixed = MixedExamples([dataset for dataset, _ in parts], weights)
        return mixed, dict(parts[0][1], examples=len(mixed), sources=mixture)
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
    dataset = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    if "word_starts" in dataset.column_names or "segment_b_start" in dataset.column_names:
        dataset = dataset.with_transform(storage.expand)  # rows come out as the builders made them
    return dataset, info


def available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
