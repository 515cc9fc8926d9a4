"""Real corpora: every input format, sentence splitting, compact storage, corpus mixing."""

import bz2
import gzip
import json
import lzma
import os
import random

import numpy as np
import pytest

import pretraining.data.build as build
from conftest import ROOT, SAMPLE_CORPUS, run_python, run_script, sample_lines
from pretraining.data import storage
from pretraining.data.collators import MaskedLMCollator, Masking, mask_tokens
from pretraining.data.build import ExampleSpec
from pretraining.data.cache import load_examples, prepare_examples
from pretraining.data.mixing import MixedExamples, sources
from pretraining.data.sampler import GlobalBatchSampler
from ja_common.corpus import input_bytes, iter_documents, split_sentences
from tokenizer.encoder import SubwordEncoder
from ja_common.errors import UserError


def documents():
    """The sample corpus as documents of 2-7 lines, some lines holding two sentences (paragraphs)."""
    lines, rng, docs = sample_lines(), random.Random(0), []
    while lines:
        size = rng.randint(2, 7)
        doc, lines = lines[:size], lines[size:]
        if len(doc) > 2:
            doc = [doc[0] + doc[1]] + doc[2:]
        docs.append(doc)
    return docs


def write_twins(folder):
    """The same documents in every format; returns {name: path}."""
    docs = documents()
    text = "".join("\n".join(doc) + "\n\n" for doc in docs)
    records = [{"id": k, "text": "\n".join(doc)} for k, doc in enumerate(docs)]
    jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    paths = {"txt": folder / "corpus.txt", "txt.gz": folder / "corpus.txt.gz", "txt.bz2": folder / "corpus.txt.bz2",
             "txt.xz": folder / "corpus.txt.xz", "jsonl": folder / "corpus.jsonl",
             "jsonl.gz": folder / "corpus.jsonl.gz",
             "parquet": folder / "corpus.parquet", "datasets": folder / "corpus-dataset"}
    paths["txt"].write_text(text, encoding="utf-8")
    paths["txt.gz"].write_bytes(gzip.compress(text.encode()))
    paths["txt.bz2"].write_bytes(bz2.compress(text.encode()))
    paths["txt.xz"].write_bytes(lzma.compress(text.encode()))
    paths["jsonl"].write_text(jsonl, encoding="utf-8")
    paths["jsonl.gz"].write_bytes(gzip.compress(jsonl.encode()))
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    table = pa.table({"id": [r["id"] for r in records], "text": [r["text"] for r in records]})
    pq.write_table(table, paths["parquet"], row_group_size=7)
    Dataset.from_dict(table.to_pydict()).save_to_disk(str(paths["datasets"]))
    return {name: str(path) for name, path in paths.items()}


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    return write_twins(tmp_path_factory.mktemp("twins"))


def test_sentences_are_cut_after_sentence_marks_outside_quotes():
    assert split_sentences("吾輩は猫である。名前はまだ無い。") == ["吾輩は猫である。", "名前はまだ無い。"]
    assert split_sentences("「行くよ。」と彼は言った。本当か！？うん") == ["「行くよ。」と彼は言った。", "本当か！？", "うん"]
    assert split_sentences("『本。「引用」。』と書く。") == ["『本。「引用」。』と書く。"]
    assert split_sentences("「閉じない。ここで切る。") == ["「閉じない。", "ここで切る。"]
    for line in sample_lines():  # one sentence a line stays as it is
        assert split_sentences(line) == [line]


def test_long_lines_are_cut_as_mecab_cuts_them():
    # tokenizer/mecab.py keeps its own copy (it is saved with BPE tokenizers and runs alone)
    from ja_common import corpus
    from tokenizer import mecab

    text = ("これは長い文、" * 3000) + "x" * 25_000
    assert corpus.MAX_PARSE_CHARS == mecab.MAX_PARSE_CHARS
    assert corpus.split_long_text(text) == mecab.split_long_text(text) and len(corpus.split_long_text(text)) > 3


def test_a_directory_of_corpora_takes_a_datasets_folder_whole(twins):
    from ja_common.corpus import expand_inputs

    folder = os.path.dirname(twins["txt"])
    assert expand_inputs([folder]) == sorted(twins.values())


def test_a_dataset_dict_is_refused_with_its_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    from ja_common.corpus import expand_inputs

    split = Dataset.from_dict({"text": ["一つ目。"]})
    DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(UserError, match=r"holds the splits test, train of a DatasetDict: give one split's folder"):
        expand_inputs([str(tmp_path / "dict")])
    assert expand_inputs([str(tmp_path / "dict" / "train")]) == [str(tmp_path / "dict" / "train")]


def test_every_format_reads_the_same_documents(twins):
    expected = list(iter_documents(twins["txt"]))
    assert expected == documents()
    for name, path in twins.items():
        seen = []
        assert list(iter_documents(path, progress=seen.append)) == expected, name
        assert 0 < sum(seen) <= input_bytes(path), name  # the bar counts the file's bytes


@pytest.mark.parametrize("kind", ["nsp", "packed"])
def test_every_format_builds_the_examples_of_its_text_twin(twins, wordpiece_dir, tmp_path, kind, monkeypatch):
    monkeypatch.setattr(build, "CHUNK_CHARS", 2000)  # several chunks, so chunking must agree too
    built = {}
    for name, path in twins.items():
        folder = prepare_examples([path], wordpiece_dir, ExampleSpec(kind, 64), dataset_dir=str(tmp_path / name),
                                  show_progress=False, num_proc=2 if name == "jsonl" else 1)
        built[name] = load_examples(folder)[0][:]
    assert len(built["txt"]["input_ids"]) > 20
    for name in twins:
        assert built[name] == built["txt"], name


def test_tokenizer_from_jsonl_equals_tokenizer_from_text(twins, tmp_path):
    from tokenizer.train import TokenizerSettings, train_tokenizer

    for name in ("txt", "jsonl.gz"):
        train_tokenizer([twins[name]], str(tmp_path / name), TokenizerSettings(vocab_size=2000), num_files=2,
                        show_progress=False)
    assert (tmp_path / "txt" / "vocab.txt").read_text() == (tmp_path / "jsonl.gz" / "vocab.txt").read_text()


@pytest.mark.parametrize("name", ["bad.txt", "bad.txt.gz"])
def test_bytes_that_are_not_utf8_are_reported_replaced_or_skipped(tmp_path, name):
    data = "一行目。\n二行目。\n".encode() + b"\xff\xfe\n" + "四行目。\n\n次の文書。\n".encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(UserError, match=rf"{name}, line 3: bytes that are not UTF-8"):
        list(iter_documents(str(path)))
    assert list(iter_documents(str(path), encoding_errors="skip")) == [["一行目。", "二行目。", "四行目。"], ["次の文書。"]]
    assert list(iter_documents(str(path), encoding_errors="replace"))[0][2] == "\ufffd\ufffd"


def test_record_errors_name_the_file_line_and_column(tmp_path, wordpiece_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "一つ目。"}\n{"body": "二つ目。"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.jsonl, line 2: no 'text' field .*--text_column"):
        list(iter_documents(str(bad)))
    nulls = tmp_path / "nulls.jsonl"
    nulls.write_text('{"text": null}\n\n{"text": "一つ目。\\n\\n二行目。"}\n', encoding="utf-8")
    assert list(iter_documents(str(nulls))) == [["一つ目。", "二行目。"]]  # a record is one document
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "一つ目。"\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"broken.jsonl, line 1: not a JSON record"):
        list(iter_documents(str(broken)))
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "numbers.parquet")
    Dataset.from_dict({"text": [1, 2]}).save_to_disk(str(tmp_path / "numbers"))
    for numbers in (tmp_path / "numbers.parquet", tmp_path / "numbers"):
        with pytest.raises(UserError, match=r"the column 'text' holds int64, not text; name the text's column"):
            list(iter_documents(str(numbers)))
        with pytest.raises(UserError, match=r"no column 'body' \(it has 'text'\)"):
            list(iter_documents(str(numbers), text_column="body"))
    result = run_script("train_tokenizer.py", ["--input_file", str(bad), "--model_dir", str(tmp_path / "tok")])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {bad}, line 2: no 'text' field")


def stored_bytes_per_token(folder):
    _, info = load_examples(folder)
    files = [os.path.join(folder, name) for name in info["data_files"]]
    tokens = sum(len(row) for row in load_examples(folder)[0][:]["input_ids"])
    return sum(map(os.path.getsize, files)) / tokens


def test_uint16_and_int32_storage_give_identical_batches(wordpiece_dir, tmp_path, monkeypatch):
    spec = ExampleSpec("nsp", 128)
    small = prepare_examples([SAMPLE_CORPUS], wordpiece_dir, spec, dataset_dir=str(tmp_path / "uint16"),
                             show_progress=False)
    monkeypatch.setattr(storage, "UINT16_IDS", 0)  # every id "too large": int32 storage
    large = prepare_examples([SAMPLE_CORPUS], wordpiece_dir, spec, dataset_dir=str(tmp_path / "int32"),
                             show_progress=False)
    assert load_examples(small)[1]["id_type"] == "uint16" and load_examples(large)[1]["id_type"] == "int32"
    encoder = SubwordEncoder(wordpiece_dir)
    collator = MaskedLMCollator(encoder.token_id("[MASK]"), encoder.token_id("[PAD]"), encoder.vocab_size, seed=1,
                                masking=Masking("whole-word"))
    rows = [load_examples(folder)[0] for folder in (small, large)]
    assert len(rows[0]) == len(rows[1]) > 10
    for start in range(0, len(rows[0]), 8):
        keys = list(range(start, min(start + 8, len(rows[0]))))
        a, b = (collator([dict(r[i], epoch=0, index=i) for i in keys]) for r in rows)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert stored_bytes_per_token(small) <= 3.2 < stored_bytes_per_token(large)


def test_compact_storage_keeps_every_word_and_segment(wordpiece_dir):
    """The builders' columns and the stored ones, expanded: the same masks with whole-word masking."""
    encoder = SubwordEncoder(wordpiece_dir)
    docs = [[sentence for line in doc for sentence in split_sentences(line)] for doc in documents()]
    text = build.tokenize_chunk(encoder, docs)
    columns, _, _ = build.build_columns(text, ExampleSpec("nsp", 48), encoder, 0)
    stored = storage.compact(columns)
    offsets = columns["input_ids"].offsets
    rows = {name: [column.values[offsets[k]:offsets[k + 1]].tolist() for k in range(len(offsets) - 1)]
            if isinstance(column, type(columns["input_ids"])) else column.tolist() for name, column in stored.items()}
    expanded = storage.expand(rows)
    mask_id = encoder.token_id("[MASK]")
    for k in range(len(offsets) - 1):
        ids = columns["input_ids"].values[offsets[k]:offsets[k + 1]]
        assert expanded["token_type_ids"][k] == columns["token_type_ids"].values[offsets[k]:offsets[k + 1]].tolist()
        original = mask_tokens(ids, columns["word_ids"].values[offsets[k]:offsets[k + 1]], np.random.default_rng(k),
                               mask_id, encoder.vocab_size, Masking("whole-word"))
        again = mask_tokens(ids, expanded["word_ids"][k], np.random.default_rng(k), mask_id, encoder.vocab_size,
                            Masking("whole-word"))
        assert all(np.array_equal(x, y) for x, y in zip(original, again))


def test_preparing_examples_does_not_import_torch(wordpiece_dir, tmp_path):
    # --prepare_only runs on CPU machines before GPUs are rented: torch's 2 s and 130 MB are not needed
    args = ["--prepare_only", "--input_file", SAMPLE_CORPUS, "--tokenizer_dir", wordpiece_dir, "--model_type",
            "bert-tiny", "--dataset_dir", str(tmp_path / "examples"), "--num_proc", "1"]
    result = run_python(f"import sys, run_pretraining; run_pretraining.main({args!r}); "
                        "print('torch imported:', 'torch' in sys.modules)", cwd=ROOT)
    assert "examples ready in" in result.stdout and "torch imported: False" in result.stdout, result.stdout


def test_weighted_inputs_are_parsed():
    assert sources(["a.txt", "b.txt"]) == [(["a.txt", "b.txt"], None)]
    assert sources(["wiki.parquet:1.0", "cc100.xz:0.3", "c.txt"]) == [
        (["wiki.parquet"], 1.0), (["cc100.xz"], 0.3), (["c.txt"], 1.0)]
    with pytest.raises(UserError, match="positive"):
        sources(["a.txt:-1"])


def test_mixing_weights_give_their_shares(twins, wordpiece_dir, tmp_path):
    spec = ExampleSpec("packed", 32)
    a = load_examples(prepare_examples([SAMPLE_CORPUS], wordpiece_dir, spec, dataset_dir=str(tmp_path / "a"),
                                       show_progress=False))[0]
    b = load_examples(prepare_examples([twins["jsonl"]], wordpiece_dir, spec, dataset_dir=str(tmp_path / "b"),
                                       show_progress=False))[0]
    mixed = MixedExamples([a, b], [1.0, 0.3])
    assert len(mixed) == len(a) + len(b)
    sampler = GlobalBatchSampler(len(mixed), [5, 3], 0, seed=3)
    steps = len(mixed) // 8
    drawn = [index for step in range(steps) for _, index in sampler.indices_for_step(step)]
    share = np.mean([mixed.locate(index)[0] == 1 for index in drawn])
    assert abs(share - 0.3 / 1.3) <= 0.02, share
    # the upsampled source repeats every row once or twice, the downsampled one takes evenly spaced rows
    rows_a = [mixed.locate(i)[1] for i in range(mixed.counts[0])]
    rows_b = [mixed.locate(i)[1] for i in range(mixed.counts[0], len(mixed))]
    assert mixed.counts[0] > len(a) and set(np.bincount(rows_a)) == {1, 2}
    assert mixed.counts[1] < len(b) and rows_b[0] == 0 and set(np.diff(rows_b)) <= {len(b) // len(rows_b),
                                                                                   -(-len(b) // len(rows_b))}
    last = len(mixed) - 1
    batch = mixed[[0, last, 1]]
    assert batch["input_ids"] == [a[0]["input_ids"], b[rows_b[-1]]["input_ids"], a[rows_a[1]]["input_ids"]]


def test_batches_read_as_arrow_equal_the_rows_datasets_gives(wordpiece_dir, tmp_path):
    """IndexedExamples reads a batch of stored rows as one Arrow table (storage.expand_table): the
    items equal what datasets' rows expand to, for every example kind and for the folder written
    by 824858b (tests/fixtures)."""
    from pretraining.data.sampler import IndexedExamples

    folders = [prepare_examples([SAMPLE_CORPUS], wordpiece_dir, ExampleSpec(kind, 48),
                                dataset_dir=str(tmp_path / kind), show_progress=False)
               for kind in ("nsp", "sop", "packed", "span")]
    folders.append(os.path.join(ROOT, "tests", "fixtures", "main-824858b", "examples"))
    for folder in folders:
        examples = IndexedExamples(load_examples(folder)[0])
        keys = [(1, int(i)) for i in np.random.default_rng(0).permutation(len(examples))[:20]]
        fast = examples.__getitems__(keys)
        examples.table = None  # datasets' rows through storage.expand
        slow = examples.__getitems__(keys)
        for a, b in zip(fast, slow):
            assert a.keys() == b.keys() and len(a) >= 4, folder
            for name in a:
                assert np.array_equal(np.asarray(a[name]), np.asarray(b[name])), (folder, name)


@pytest.mark.parametrize("name", ["txt", "txt.xz", "jsonl", "jsonl.gz", "parquet", "datasets"])
def test_tokenizer_workers_share_out_every_format(twins, name, monkeypatch):
    from ja_common import corpus
    from ja_common.corpus import plan_segments, segment_documents

    monkeypatch.setattr(corpus, "_RECORDS_PER_READ", 4)  # rows are shared out by batch: several in a tiny file
    shards = plan_segments([twins[name]], 3)
    assert len(shards) == 3, "one input is read by every worker"
    read = [[document for segment in shard for document in segment_documents(segment)] for shard in shards]
    assert all(read), "every worker has documents"
    assert sorted(d for shard in read for d in shard) == sorted(documents()), "each document once, whole"
    sizes = [sum(segment.bytes for segment in shard) for shard in shards]
    assert 0 <= sum(sizes) - input_bytes(twins[name]) < 3 and min(sizes) > 0  # shares rounded up


def test_sampled_documents_are_the_same_for_any_process_count_and_format(twins, tmp_path):
    from tokenizer.word_split import DocumentSample, split_corpus

    def words(name, workers, seed=0):
        out = tmp_path / f"{name}-{workers}-{seed}"
        out.mkdir()
        split = split_corpus([twins[name]], str(out), workers, {"mecab_dic": "unidic_lite", "mecab_option": None},
                             show_progress=False, sample=DocumentSample(0.3, seed))
        assert split.documents == len(documents())
        lines = sorted(line for path in split.word_files for line in open(path, encoding="utf-8"))
        return lines, split.documents_split

    drawn, count = words("txt", 1)
    assert 0.15 * len(documents()) < count < 0.45 * len(documents())
    assert words("txt", 3) == (drawn, count)
    assert words("jsonl.gz", 2) == (drawn, count)
    assert words("txt", 1, seed=1)[0] != drawn
