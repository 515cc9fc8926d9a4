"""Tokenizer training speed and memory on the Aozora corpus (../shared/corpus/aozora).

Prints: raw fugashi -Owakati speed against our MeCab stage at 1 and 2 processes; the
whole train_tokenizer.py run (WordPiece, vocab 8000, --num_files 2) at 1x and 10x the
corpus, wall time and peak memory; the same corpus as one .jsonl.xz (a record a document)
at 1 and 2 processes, 1x and 10x; and at 10x, a --sample_bytes 0.1 run against the full one
(time, and the share of the full vocabulary the sampled one holds).

    python benchmarks/bench_tokenizer.py [--repeat 3] [--skip_text]
"""

import argparse
import json
import lzma
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import ROOT, aozora_corpus, best_of, raw_fugashi, timed_command  # noqa: E402
from tokenizer.word_split import split_corpus  # noqa: E402


def our_mecab_stage(path, processes, work_dir):
    kwargs = {"mecab_dic": "unidic_lite", "mecab_option": None}
    return best_of(args.repeat, lambda: split_corpus([path], work_dir, processes, kwargs, show_progress=False))


def whole_run(path, work_dir, processes=2, name="tok", extra=()):
    out = os.path.join(work_dir, name)
    cmd = [sys.executable, os.path.join(ROOT, "train_tokenizer.py"), "--input_file", path, "--model_dir", out,
           "--vocab_size", "8000", "--num_files", str(processes), "--overwrite", "--quiet", *extra]
    runs = [timed_command(cmd) for _ in range(args.repeat)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def jsonl_xz(text_path):
    """The text corpus as one .jsonl.xz, a record a document (its lines up to a blank line)."""
    path = text_path.replace(".txt", ".jsonl.xz")
    if not os.path.exists(path):
        with open(text_path, encoding="utf-8") as f, lzma.open(path, "wt", encoding="utf-8", preset=1) as out:
            for document in f.read().split("\n\n"):
                if document.strip():
                    out.write(json.dumps({"text": document.strip("\n")}, ensure_ascii=False) + "\n")
    return path


def vocabulary(work_dir, name):
    with open(os.path.join(work_dir, name, "vocab.txt"), encoding="utf-8") as f:
        return set(f.read().split("\n"))


def jsonl_xz_runs(work):
    for repeat in (1, 10):
        path = jsonl_xz(aozora_corpus(work, repeat))
        size = os.path.getsize(path) / 1e6
        seconds = {}
        for processes in (1, 2):
            seconds[processes], peak = whole_run(path, work, processes, name=f"jsonl-{repeat}-{processes}")
            print(f"one .jsonl.xz ({size:.1f} MB, x{repeat}), --num_files {processes}: {seconds[processes]:.1f} s wall, "
                  f"{peak:.0f} MB peak RSS")
        same = vocabulary(work, f"jsonl-{repeat}-1") == vocabulary(work, f"jsonl-{repeat}-2")
        print(f"  2 processes: {seconds[1] / seconds[2]:.2f}x the speed of 1; vocabularies identical: {same}")
    sampled, _ = whole_run(path, work, 2, name="jsonl-sampled", extra=("--sample_bytes", "0.1"))
    full, part = vocabulary(work, "jsonl-10-2"), vocabulary(work, "jsonl-sampled")
    print(f"x10 --sample_bytes 0.1, --num_files 2: {sampled:.1f} s wall ({seconds[2] / sampled:.1f}x faster than "
          f"full); holds {100 * len(full & part) / len(full):.1f}% of the full vocabulary")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip_text", action="store_true", help="only the .jsonl.xz runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        if args.skip_text:
            jsonl_xz_runs(work)
            sys.exit()
        corpus = aozora_corpus(work)
        mb = os.path.getsize(corpus) / 1e6
        print(f"corpus: {mb:.1f} MB, {os.cpu_count()} cores")
        for processes in (1, 2):
            raw = raw_fugashi(corpus, processes, args.repeat)
            ours = our_mecab_stage(corpus, processes, work)
            print(
                f"MeCab stage, {processes} process(es): raw fugashi {mb / raw:.2f} MB/s, ours {mb / ours:.2f} MB/s "
                f"({100 * raw / ours:.0f}% of raw)"
            )
        for repeat in (1, 10):
            path = aozora_corpus(work, repeat)
            seconds, peak = whole_run(path, work)
            size = os.path.getsize(path) / 1e6
            print(f"train_tokenizer.py wordpiece vocab 8000 --num_files 2, {size:.0f} MB: {seconds:.2f} s wall, {peak:.0f} MB peak RSS")
        jsonl_xz_runs(work)
