"""Corpus -> cached pretraining examples: every objective, the cache, interruption."""

import collections
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import pretraining.data.build as builder
from conftest import ROOT, SAMPLE_CORPUS, run_python, sample_lines
from pretraining.data.build import ExampleSpec
from pretraining.data.cache import load_examples, prepare_examples
from pretraining.data.builders import span_lengths
from ja_common.corpus import iter_documents
from tokenizer.encoder import SubwordEncoder
from ja_common.errors import UserError


def build(tokenizer_dir, tmp_path, kind, length=64, corpus=SAMPLE_CORPUS, name=None, **kwargs):
    out = tmp_path / (name or f"{kind}-{length}")
    folder = prepare_examples([str(corpus)], tokenizer_dir, ExampleSpec(kind, length), dataset_dir=str(out),
                              show_progress=False, **kwargs)
    return load_examples(folder)


@pytest.fixture(scope="module")
def special(wordpiece_dir):
    encoder = SubwordEncoder(wordpiece_dir)
    return encoder.token_id("[CLS]"), encoder.token_id("[SEP]")


@pytest.mark.parametrize("chunk_chars", [7, 100, 4096, 1 << 20])
def test_chunks_read_every_document_once(tmp_path, chunk_chars, monkeypatch):
    # Blank lines of spaces, CRLF ends, a file without a final newline: the chunks together
    # give the file's documents, each once, in order.
    corpus = tmp_path / "corpus.txt"
    text = "一つ目の文書。\r\n二行目。\r\n\r\n二つ目\n　\n三つ目の文書\nその続き\n \n\n四つ目" * 20
    corpus.write_bytes(text.encode("utf-8"))
    documents, current = [], []
    for line in text.split("\n"):
        if line.strip():
            current.append(line.rstrip("\r"))
        elif current:
            documents, current = documents + [current], []
    documents.append(current)
    assert list(iter_documents(str(corpus))) == documents
    monkeypatch.setattr(builder, "CHUNK_CHARS", chunk_chars)
    chunks = list(builder.plan_chunks([str(corpus)]))
    assert [index for index, _ in chunks] == list(range(len(chunks)))
    assert [document for _, chunk in chunks for document in chunk] == documents
    assert len(chunks) == 1 if chunk_chars > len(text) else len(chunks) > 1


def test_nsp_pairs(wordpiece_dir, tmp_path, special):
    cls_id, sep_id = special
    dataset, info = build(wordpiece_dir, tmp_path, "nsp", 64)
    labels = np.array(dataset["next_sentence_label"])
    assert len(dataset) > 100 and 0.35 < labels.mean() < 0.65
    for row in dataset:
        ids, types = row["input_ids"], row["token_type_ids"]
        assert len(ids) <= 64 and ids[0] == cls_id and ids[-1] == sep_id and ids.count(sep_id) == 2
        first_sep = ids.index(sep_id)
        assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
        assert all(w == -1 for i, w in zip(ids, row["word_ids"]) if i in (cls_id, sep_id))


def test_sop_pairs_are_swapped_half_the_time(wordpiece_dir, tmp_path, special):
    cls_id, sep_id = special
    dataset, _ = build(wordpiece_dir, tmp_path, "sop", 64)
    labels = np.array(dataset["sentence_order_label"])
    assert 0.3 < labels.mean() < 0.7
    # the builder's own columns number the words through the chunk (the stored ones per example)
    encoder = SubwordEncoder(wordpiece_dir)
    text = builder.tokenize_chunk(encoder, list(iter_documents(SAMPLE_CORPUS)))
    columns, _, _ = builder.build_columns(text, ExampleSpec("sop", 64), encoder, 0)
    offsets = columns["input_ids"].offsets
    for k, label in enumerate(columns["sentence_order_label"]):
        ids = columns["input_ids"].values[offsets[k]:offsets[k + 1]].tolist()
        wids = columns["word_ids"].values[offsets[k]:offsets[k + 1]]
        first_sep = ids.index(sep_id)
        a, b = wids[1:first_sep], wids[first_sep + 1 : -1]
        # word ids grow through a document: A before B in the text unless swapped
        assert (max(a) < min(b)) == (label == 0)


def test_packed_blocks_keep_every_token_in_order(wordpiece_dir, tmp_path, special):
    cls_id, sep_id = special
    dataset, _ = build(wordpiece_dir, tmp_path, "packed", 50)
    blocks = [row["input_ids"] for row in dataset]
    assert all(len(b) == 50 for b in blocks)
    stream = [i for b in blocks for i in b]
    # what transformers' own tokenizer gives for the corpus, in a fresh process
    code = f"""
import json
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained({wordpiece_dir!r})
print(json.dumps([tok(l, add_special_tokens=False)["input_ids"] for l in {sample_lines()!r}]))
"""
    reference = json.loads(run_python(code, cwd=ROOT).stdout.strip().splitlines()[-1])
    content = [i for i in stream if i not in (cls_id, sep_id)]
    expected = [i for ids in reference for i in ids]
    assert content == expected[: len(content)]
    assert len(expected) - len(content) < 50  # only the final remainder is dropped
    assert stream[0] == cls_id and stream.count(cls_id) >= 20  # one [CLS] per document


def test_packed_blocks_across_chunks_drop_only_the_final_remainder(wordpiece_dir, tmp_path, special, monkeypatch):
    # Each chunk's tokens after its last whole block are carried into blocks built at the
    # end, so many small chunks lose no more than one big one.
    cls_id, sep_id = special
    monkeypatch.setattr(builder, "CHUNK_CHARS", 1500)
    assert len(list(builder.plan_chunks([SAMPLE_CORPUS]))) >= 5
    dataset, info = build(wordpiece_dir, tmp_path, "packed", 64)
    content = [i for row in dataset["input_ids"] for i in row if i not in (cls_id, sep_id)]
    assert all(len(row) == 64 for row in dataset["input_ids"])
    assert 0 <= info["tokens"] - len(content) < 64
    corpus_ids = collections.Counter(i for ids, _ in SubwordEncoder(wordpiece_dir).encode(sample_lines()) for i in ids)
    assert not collections.Counter(content) - corpus_ids


def test_t5_span_corruption_exact_lengths_and_recoverable(wordpiece_dir, tmp_path, special):
    cls_id, sep_id = special
    dataset, info = build(wordpiece_dir, tmp_path, "span", 64)
    raw_length, target_length = span_lengths(64)
    sentinels = info["sentinel_ids"]
    assert sentinels[0] == 2000 and sentinels[:3] == [2000, 2001, 2002]  # appended after the vocabulary
    packed, _ = build(wordpiece_dir, tmp_path, "packed", raw_length)
    assert len(dataset) == len(packed)
    for row, raw in zip(dataset, packed):
        inputs, targets = row["input_ids"], row["labels"]
        assert len(inputs) == 64 and len(targets) == target_length
        assert inputs[-1] == sep_id and targets[-1] == sep_id
        used = [t for t in inputs if t >= 2000]
        assert used == sentinels[: len(used)] and [t for t in targets if t >= 2000] == used
        # put the spans back: every original token is recovered, in order
        spans, current = {}, None
        for t in targets[:-1]:
            if t >= 2000:
                current = t
                spans[current] = []
            else:
                spans[current].append(t)
        restored = []
        for t in inputs[:-1]:
            restored.extend(spans[t] if t >= 2000 else [t])
        assert restored == raw["input_ids"]


def test_rebuild_gives_the_same_examples_with_any_number_of_workers(wordpiece_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(open(SAMPLE_CORPUS, encoding="utf-8").read() * 30, encoding="utf-8")  # 2 chunks
    assert len(list(builder.plan_chunks([str(corpus)]))) >= 2
    one, _ = build(wordpiece_dir, tmp_path, "nsp", 64, corpus=corpus, name="one", num_proc=1)
    two, _ = build(wordpiece_dir, tmp_path, "nsp", 64, corpus=corpus, name="two", num_proc=2)
    assert one[:]["input_ids"] == two[:]["input_ids"]
    assert one[:]["next_sentence_label"] == two[:]["next_sentence_label"]


def test_large_builds_are_split_into_data_files(wordpiece_dir, tmp_path, monkeypatch):
    one, _ = build(wordpiece_dir, tmp_path, "packed", 64, name="one")
    monkeypatch.setattr(builder, "_WRITE_BATCH", 32)
    monkeypatch.setattr(builder, "SHARD_BYTES", 4_000)  # a new data file after every ~4 KB
    many, _ = build(wordpiece_dir, tmp_path, "packed", 64, name="many")
    files = sorted(p for p in os.listdir(tmp_path / "many") if p.endswith(".arrow"))
    assert len(files) > 2 and files[-1] == f"data-{len(files) - 1:05d}-of-{len(files):05d}.arrow"
    assert many[:]["input_ids"] == one[:]["input_ids"] and many.features == one.features


def test_cache_is_reused_without_tokenizing(wordpiece_dir, tmp_path, monkeypatch):
    _, first = build(wordpiece_dir, tmp_path, "packed", 64)

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(builder, "build_chunk", no_tokenizing)
    started = time.time()
    _, second = build(wordpiece_dir, tmp_path, "packed", 64)
    assert second == first and time.time() - started < 5


def test_changed_corpus_or_tokenizer_rebuilds(wordpiece_dir, bpe_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(open(SAMPLE_CORPUS, encoding="utf-8").read(), encoding="utf-8")
    _, first = build(wordpiece_dir, tmp_path, "packed", 64, corpus=corpus, name="cache")
    with open(corpus, "a", encoding="utf-8") as f:
        f.write("\n新しい文書の最初の文です。\nそして二番目の文がここにある。\n" * 40)
    _, second = build(wordpiece_dir, tmp_path, "packed", 64, corpus=corpus, name="cache")
    assert second["fingerprint"] != first["fingerprint"] and second["tokens"] > first["tokens"]
    _, third = build(bpe_dir, tmp_path, "packed", 64, corpus=corpus, name="cache")
    assert third["fingerprint"] != second["fingerprint"]


def test_default_cache_folder(wordpiece_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("JA_PRETRAINING_CACHE", str(tmp_path / "cache"))
    folder = prepare_examples([SAMPLE_CORPUS], wordpiece_dir, ExampleSpec("nsp", 64), show_progress=False)
    assert folder.startswith(str(tmp_path / "cache")) and load_examples(folder)[1]["examples"] > 0


def test_disable_overwrite_cache_errors(wordpiece_dir, tmp_path):
    with pytest.raises(UserError, match="no examples cache"):
        build(wordpiece_dir, tmp_path, "packed", 64, name="missing", disable_overwrite_cache=True)
    build(wordpiece_dir, tmp_path, "packed", 64, name="built")
    with pytest.raises(UserError, match="another corpus, tokenizer or preset"):
        build(wordpiece_dir, tmp_path, "packed", 32, name="built", disable_overwrite_cache=True)
    # and through the CLI: one line, exit 2
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run_pretraining.py"), "--prepare_only", "--input_file", SAMPLE_CORPUS,
         "--tokenizer_dir", wordpiece_dir, "--model_type", "gpt2-tiny", "--dataset_dir", str(tmp_path / "nowhere"),
         "--parameter_file", os.path.join(ROOT, "parameter.json"), "--disable_overwrite_cache"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: --disable_overwrite_cache: no examples cache at {tmp_path / 'nowhere'}; run once without it to build one"
    ]


def test_failed_build_leaves_no_cache(wordpiece_dir, tmp_path, monkeypatch):
    def failing(task):
        raise RuntimeError("disk full")

    monkeypatch.setattr(builder, "build_chunk", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        build(wordpiece_dir, tmp_path, "packed", 64, name="broken", num_proc=1)
    assert not (tmp_path / "broken").exists()
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]


def test_killed_build_is_not_taken_for_a_cache(wordpiece_dir, tmp_path):
    corpus = tmp_path / "big.txt"
    corpus.write_text(open(SAMPLE_CORPUS, encoding="utf-8").read() * 100, encoding="utf-8")  # 4 chunks
    folder = tmp_path / "examples"
    args = [sys.executable, os.path.join(ROOT, "run_pretraining.py"), "--prepare_only", "--input_file", str(corpus),
            "--tokenizer_dir", wordpiece_dir, "--model_type", "bert-tiny", "--dataset_dir", str(folder),
            "--parameter_file", os.path.join(ROOT, "parameter.json"), "--num_proc", "1"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill it once the first chunk's examples are in the folder being built
    while process.poll() is None and not list(tmp_path.glob("*partial*/dataset/data-*.arrow")):
        time.sleep(0.02)
    if process.poll() is not None:
        pytest.skip("the build finished before it could be killed")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not folder.exists()
    assert [p for p in os.listdir(tmp_path) if "partial" in p]  # the debris is there, but never loaded
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert load_examples(str(folder))[1]["examples"] > 1000
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]  # the next build cleared the debris
