"""Tokenizer training: ids, compatibility with transformers, determinism, bad input."""

import json
import os

import pytest

from conftest import SAMPLE_CORPUS, run_python, run_script, sample_lines
from ja_common.errors import UserError
from tokenizer.encoder import SubwordEncoder
from tokenizer.mecab import MecabWordSplitter
from tokenizer.train import TokenizerSettings, train_tokenizer

# Full-width punctuation, ellipses, half-width kana, Latin letters, digits, special tokens,
# and MeCab words that contain punctuation (emoticons, URLs, decimals).
TRICKY_LINES = [
    "「えっ……本当に？」と彼は言った。",
    "ＡＩ（人工知能）の研究は２０２０年代に加速した！",
    "ｶﾀｶﾅとﾊﾝｶｸ、それに〜や‥も混ぜる。",
    "価格は1,234.56円です（税込）。",
    "詳しくは https://example.com/a-b_c?x=1 を見てください。",
    "(^_^) こんにちは ＼(^o^)／",
    "これは[MASK]です。[SEP]次の文。",
    "   前後に空白   ",
    "𠮷野家で食べた。",
]


def test_wordpiece_directory_loads_as_bert_japanese_tokenizer_without_project(wordpiece_dir):
    lines = sample_lines() + TRICKY_LINES
    expected = [ids for ids, _ in SubwordEncoder(wordpiece_dir).encode(lines)]
    code = f"""
import json
from transformers import AutoTokenizer, BertJapaneseTokenizer
tok = AutoTokenizer.from_pretrained({wordpiece_dir!r})
assert type(tok) is BertJapaneseTokenizer, type(tok)
assert tok.word_tokenizer_type == "mecab" and tok.mecab_kwargs["mecab_dic"] == "unidic_lite"
print(json.dumps([tok(line, add_special_tokens=False)["input_ids"] for line in {lines!r}]))
"""
    result = run_python(code, cwd=os.path.dirname(wordpiece_dir), block_project=True)
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got == expected
    assert sum(len(ids) for ids in expected) > 3000


def test_bpe_directory_loads_with_remote_code_without_project(bpe_dir):
    lines = sample_lines() + TRICKY_LINES
    expected = [ids for ids, _ in SubwordEncoder(bpe_dir).encode(lines)]
    code = f"""
import json
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained({bpe_dir!r}, trust_remote_code=True)
assert type(tok).__name__ == "MecabBpeTokenizer", type(tok)
assert "tokenizer" not in __import__("sys").modules
print(json.dumps([tok(line, add_special_tokens=False)["input_ids"] for line in {lines!r}]))
"""
    result = run_python(code, cwd=os.path.dirname(bpe_dir), block_project=True)
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got == expected


@pytest.mark.parametrize("tokenizer", ["wordpiece", "bpe"])
def test_batch_path_gives_the_per_line_ids(tokenizer, wordpiece_dir, bpe_dir):
    # The data pipeline splits a chunk's lines at once and encodes through a table of known
    # words; it must give exactly the ids of line-by-line encoding (checked above against
    # transformers), whether the words are new, known, or the table was just reset.
    encoder = SubwordEncoder(wordpiece_dir if tokenizer == "wordpiece" else bpe_dir)
    long_line = "長い行です。" * 2000  # over MAX_PARSE_CHARS: parsed in pieces
    lines = sample_lines() + TRICKY_LINES + ["制御\x1c文字", "", long_line]
    expected = [i for ids, _ in encoder.encode(lines) for i in ids]
    plain = [line for line in lines if "[" not in line and "\x1c" not in line and len(line) < 1000]
    for batch in (plain, lines):  # the fast path, and the fallback (special tokens, odd characters, long lines)
        words, counts = encoder.splitter.split_many(batch)
        per_line = [encoder.splitter.split(line) for line in batch]
        assert words == [w for line_words in per_line for w in line_words]
        assert counts == [len(line_words) for line_words in per_line]
    for max_cache in (2_000_000, 2_000_000, 10):  # new words, known words, a table reset each call
        encoder._max_cache = max_cache
        ids, lengths = encoder.encode_flat(words)
        assert ids.tolist() == expected and lengths.sum() == len(ids) and len(lengths) == len(words)


def test_encoder_ids_follow_mecab_words_and_vocabulary(wordpiece_dir):
    encoder = SubwordEncoder(wordpiece_dir)
    vocab = encoder.vocab
    words = MecabWordSplitter().split("吾輩は猫である。")
    assert words == ["吾輩", "は", "猫", "で", "ある", "。"]
    ids, word_ids = encoder.encode(["吾輩は猫である。"])[0]
    # every MeCab word becomes its subwords: the first without, the rest with "##"
    inverse = {i: t for t, i in vocab.items()}
    pieces = [inverse[i] for i in ids]
    rebuilt = {}
    for piece, w in zip(pieces, word_ids):
        rebuilt.setdefault(w, []).append(piece)
    for w, word in enumerate(words):
        joined = "".join(p[2:] if k else p for k, p in enumerate(rebuilt[w]))
        assert joined == word or rebuilt[w] == ["[UNK]"]
        assert all(p.startswith("##") for p in rebuilt[w][1:])


def test_special_tokens_and_layout(wordpiece_dir):
    with open(os.path.join(wordpiece_dir, "vocab.txt"), encoding="utf-8") as f:
        vocab = f.read().splitlines()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert vocab[5:15] == [f"<unused{i}>" for i in range(10)]
    assert len(vocab) == len(set(vocab)) == 2000
    record = json.load(open(os.path.join(wordpiece_dir, "tokenizer_training.json")))
    assert record["settings"]["mecab_dic_type"] == "unidic_lite"
    assert record["corpus"]["lines"] == len(sample_lines())


def test_nfkc_and_no_lowercasing(wordpiece_dir):
    encoder = SubwordEncoder(wordpiece_dir)
    assert encoder.encode(["ＡＢＣ"]) == encoder.encode(["ABC"])
    assert encoder.encode(["ABC"]) != encoder.encode(["abc"])


@pytest.mark.parametrize("tokenizer_type", ["wordpiece", "bpe"])
def test_vocabulary_is_reproducible_across_runs_and_process_counts(tmp_path, tokenizer_type):
    # Without the fix in tokenizer/train.py, WordPiece vocabularies differ from run to run.
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(open(SAMPLE_CORPUS, encoding="utf-8").read() * 3, encoding="utf-8")
    vocab_file = "vocab.txt" if tokenizer_type == "wordpiece" else "vocab.json"
    contents = []
    for run, workers in enumerate([1, 1, 2, 3]):
        out = tmp_path / f"tok{run}"
        settings = TokenizerSettings(tokenizer_type=tokenizer_type, vocab_size=2500, min_frequency=1)
        train_tokenizer([str(corpus)], str(out), settings, num_files=workers, show_progress=False)
        contents.append((out / vocab_file).read_bytes())
        if tokenizer_type == "bpe":
            contents.append((out / "merges.txt").read_bytes())
    assert all(c == contents[0] for c in contents[::2 if tokenizer_type == "bpe" else 1])
    if tokenizer_type == "bpe":
        assert all(c == contents[1] for c in contents[1::2])


def test_cli_trains_and_keeps_intermediate_files(tmp_path):
    out, words = tmp_path / "tok", tmp_path / "words"
    result = run_script(
        "train_tokenizer.py",
        ["--input_file", SAMPLE_CORPUS, "--model_dir", str(out), "--intermediate_dir", str(words),
         "--vocab_size", "2000", "--num_files", "2", "--mecab_dic", "unidic_lite", "--quiet"],
    )
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(words)) == ["words-00000.txt", "words-00001.txt"]
    split_lines = [line for n in sorted(os.listdir(words)) for line in (words / n).read_text(encoding="utf-8").splitlines()]
    assert split_lines == [" ".join(MecabWordSplitter().split(line)) for line in sample_lines()]
    assert len((out / "vocab.txt").read_text(encoding="utf-8").splitlines()) == 2000


def test_sampled_training_is_recorded_and_repeatable(tmp_path):
    from train_tokenizer import main

    size = os.path.getsize(SAMPLE_CORPUS)
    for name, workers in (("a", 1), ("b", 2)):
        main(["--input_file", SAMPLE_CORPUS, "--model_dir", str(tmp_path / name), "--vocab_size", "1500",
              "--num_files", str(workers), "--sample_bytes", f"{size / 2000:.1f}K", "--seed", "3", "--quiet"])
    assert (tmp_path / "a" / "vocab.txt").read_bytes() == (tmp_path / "b" / "vocab.txt").read_bytes()
    record = json.loads((tmp_path / "a" / "tokenizer_training.json").read_text())
    sample = record["sample"]
    assert sample["seed"] == 3 and sample["fraction"] == pytest.approx(0.5, rel=1e-3)
    assert 0.3 < sample["documents"] / record["corpus"]["documents"] < 0.7
    full = sum(len(line) for line in sample_lines())
    assert 0.3 < sample["characters"] / full < 0.7


@pytest.mark.parametrize("value", ["0", "-1", "5X"])
def test_bad_sample_bytes_is_one_line(tmp_path, value, capsys):
    from train_tokenizer import main

    with pytest.raises(SystemExit) as stop:
        main(["--input_file", SAMPLE_CORPUS, "--model_dir", str(tmp_path / "t"), "--sample_bytes", value])
    assert stop.value.code == 2
    assert "--sample_bytes" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_directory_and_glob_inputs(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    lines = sample_lines()
    (docs / "a.txt").write_text("\n".join(lines[:100]) + "\n", encoding="utf-8")
    (docs / "b.txt").write_text("\n".join(lines[100:]) + "\n", encoding="utf-8")
    for source in (str(docs), str(docs / "*.txt")):
        out = tmp_path / ("tok-" + str(abs(hash(source))))
        train_tokenizer([source], str(out), TokenizerSettings(vocab_size=2000), show_progress=False)
        record = json.load(open(out / "tokenizer_training.json"))
        assert record["corpus"]["lines"] == len(lines)


def test_very_long_line_is_processed(tmp_path):
    corpus = tmp_path / "long.txt"
    sentence = "今日は良い天気なので公園を散歩した。"
    long_line = sentence * 200_000  # 3.6 million characters on one line
    corpus.write_text("短い行です。\n" + long_line + "\n最後の行。\n", encoding="utf-8")
    out = tmp_path / "tok"
    train_tokenizer([str(corpus)], str(out), TokenizerSettings(vocab_size=200, min_frequency=1), num_files=2, show_progress=False)
    record = json.load(open(out / "tokenizer_training.json"))
    assert record["corpus"]["words"] > 200_000 * 8


# ---- bad input: one line, non-zero exit, no traceback, nothing written ----

def _fails(args, tmp_path, expected):
    result = run_script("train_tokenizer.py", [*args, "--quiet"], cwd=str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert expected in lines[0]
    return lines[0]


def test_missing_input_file(tmp_path):
    _fails(["--input_file", "nope.txt", "--model_dir", "tok"], tmp_path, "nope.txt does not exist")
    assert not (tmp_path / "tok").exists()


def test_unreadable_input_file(tmp_path):
    if os.geteuid() == 0:
        _fails(["--input_file", str(tmp_path), "--model_dir", "tok"], tmp_path, "holds no files")
    else:
        f = tmp_path / "secret.txt"
        f.write_text("文。\n", encoding="utf-8")
        f.chmod(0)
        _fails(["--input_file", str(f), "--model_dir", "tok"], tmp_path, "cannot read")


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "blank.txt").write_text("\n\n  \n", encoding="utf-8")
    _fails(["--input_file", "empty.txt", "--model_dir", "tok"], tmp_path, "corpus is empty")
    _fails(["--input_file", "blank.txt", "--model_dir", "tok"], tmp_path, "corpus is empty")
    assert not (tmp_path / "tok").exists()


def test_invalid_utf8_names_file_and_line_and_can_be_replaced_or_skipped(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("一行目です。\n二行目です。\n".encode() + "三行目".encode("shift_jis") + b"\n" + "四行目です。\n".encode())
    message = _fails(["--input_file", "bad.txt", "--model_dir", "tok"], tmp_path, "bad.txt, line 3")
    assert "--encoding_errors" in message
    assert not (tmp_path / "tok").exists()
    for mode, lines in (("replace", 4), ("skip", 3)):
        out = tmp_path / f"tok-{mode}"
        result = run_script(
            "train_tokenizer.py",
            ["--input_file", "bad.txt", "--model_dir", str(out), "--vocab_size", "100", "--encoding_errors", mode, "--quiet"],
            cwd=str(tmp_path),
        )
        assert result.returncode == 0, result.stderr
        assert json.load(open(out / "tokenizer_training.json"))["corpus"]["lines"] == lines


def test_dictionary_not_installed(tmp_path):
    pytest.importorskip("fugashi")
    try:
        import ipadic  # noqa: F401

        pytest.skip("ipadic is installed here")
    except ImportError:
        pass
    _fails(["--input_file", SAMPLE_CORPUS, "--model_dir", "tok", "--mecab_dic_type", "ipadic"], tmp_path, "pip install ipadic")


def test_vocab_size_too_small(tmp_path):
    _fails(["--input_file", SAMPLE_CORPUS, "--model_dir", "tok", "--vocab_size", "12"], tmp_path, "--vocab_size 12 is too small")


def test_refuses_to_overwrite_existing_tokenizer(tmp_path, wordpiece_dir):
    import shutil

    existing = tmp_path / "tok"
    shutil.copytree(wordpiece_dir, existing)
    before = {p: (existing / p).read_bytes() for p in os.listdir(existing)}
    _fails(["--input_file", SAMPLE_CORPUS, "--model_dir", "tok", "--vocab_size", "2000"], tmp_path, "--overwrite")
    assert {p: (existing / p).read_bytes() for p in os.listdir(existing)} == before
    # a failing run with --overwrite leaves it untouched too
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\n")
    _fails(["--input_file", "bad.txt", "--model_dir", "tok", "--overwrite"], tmp_path, "not UTF-8")
    assert {p: (existing / p).read_bytes() for p in os.listdir(existing)} == before
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []
    # --overwrite with a BPE tokenizer replaces the WordPiece files
    result = run_script(
        "train_tokenizer.py",
        ["--input_file", SAMPLE_CORPUS, "--model_dir", "tok", "--tokenizer_type", "bpe", "--vocab_size", "2000", "--overwrite", "--quiet"],
        cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert not (existing / "vocab.txt").exists() and (existing / "vocab.json").exists()


def test_a_rejected_mecab_option_or_intermediate_dir_is_one_line(tmp_path):
    out = tmp_path / "tok"
    with pytest.raises(UserError) as error:  # fugashi's page of help used to follow
        train_tokenizer([SAMPLE_CORPUS], str(out), TokenizerSettings(mecab_option="-d/nonexistent"),
                        show_progress=False)
    assert "\n" not in str(error.value) and "no such file or directory: /nonexistent/dicrc" in str(error.value)
    with pytest.raises(UserError, match="--intermediate_dir is --model_dir"):  # word files left in the tokenizer
        train_tokenizer([SAMPLE_CORPUS], str(out), TokenizerSettings(), intermediate_dir=str(out) + "/",
                        show_progress=False)
    assert not out.exists()
