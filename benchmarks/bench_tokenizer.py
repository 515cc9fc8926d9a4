"""Tokenizer training speed and memory on the Aozora corpus (../shared/corpus/aozora).

Prints: raw fugashi -Owakati speed against our MeCab stage at 1 and 2 processes, and
the whole train_tokenizer.py run (WordPiece, vocab 8000, --num_files 2) at 1x and 10x
the corpus, wall time and peak memory.

    python benchmarks/bench_tokenizer.py [--repeat 3]
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import ROOT, aozora_corpus, best_of, raw_fugashi, timed_command  # noqa: E402
from tokenizer.word_split import split_corpus  # noqa: E402


def our_mecab_stage(path, processes, work_dir):
    kwargs = {"mecab_dic": "unidic_lite", "mecab_option": None}
    return best_of(args.repeat, lambda: split_corpus([path], work_dir, processes, kwargs, show_progress=False))


def whole_run(path, work_dir):
    out = os.path.join(work_dir, "tok")
    cmd = [sys.executable, os.path.join(ROOT, "train_tokenizer.py"), "--input_file", path, "--model_dir", out,
           "--vocab_size", "8000", "--num_files", "2", "--overwrite", "--quiet"]
    runs = [timed_command(cmd) for _ in range(args.repeat)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
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
