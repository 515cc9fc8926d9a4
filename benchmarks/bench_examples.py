"""Raw text -> cached BERT NSP examples (length 128) on the Aozora corpus.

Prints the wall time (median of --repeat runs, and the best), MB/s and peak memory of
``run_pretraining.py --prepare_only`` at 1x and 10x the corpus, with 2 processes. Beside
it, on the same text: fugashi's wakati parse alone (the floor for anything that runs
MeCab, on this machine) and transformers' BertJapaneseTokenizer through
datasets.map(num_proc=2) (tokenization only, no examples).

    python benchmarks/bench_examples.py [--repeat 5]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import ROOT, aozora_corpus, raw_fugashi, timed_command  # noqa: E402


def transformers_map(corpus, tokenizer_dir):
    from datasets import load_dataset
    from datasets.utils.logging import disable_progress_bar
    from transformers import AutoTokenizer

    disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    dataset = load_dataset("text", data_files=corpus, split="train", keep_in_memory=True)
    started = time.perf_counter()
    dataset.map(lambda batch: tokenizer(batch["text"]), batched=True, num_proc=2, keep_in_memory=True)
    return time.perf_counter() - started


def prepare_command(corpus, tokenizer_dir, params, out_dir):
    return [sys.executable, os.path.join(ROOT, "run_pretraining.py"), "--prepare_only", "--input_file", corpus,
            "--tokenizer_dir", tokenizer_dir, "--parameter_file", params, "--model_type", "bert-base-128",
            "--dataset_dir", out_dir, "--num_proc", "2"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        corpus = aozora_corpus(work)
        mb = os.path.getsize(corpus) / 1e6
        tokenizer_dir = os.path.join(work, "tok")
        timed_command([sys.executable, os.path.join(ROOT, "train_tokenizer.py"), "--input_file", corpus,
                       "--model_dir", tokenizer_dir, "--vocab_size", "32768", "--num_files", "2", "--quiet"])
        presets = json.load(open(os.path.join(ROOT, "parameter.json")))
        params = os.path.join(work, "parameter.json")
        json.dump({"bert-base-128": dict(presets["bert-base"], **{"sequence-length": 128})}, open(params, "w"))
        print(f"corpus: {mb:.1f} MB, {os.cpu_count()} cores, {args.repeat} runs each")
        for repeat in (1, 10):
            path = aozora_corpus(work, repeat)
            size = os.path.getsize(path) / 1e6
            cmd = prepare_command(path, tokenizer_dir, params, os.path.join(work, f"examples-{repeat}"))
            runs = [timed_command(cmd + ["--overwrite_cache"]) for _ in range(args.repeat if repeat == 1 else 2)]
            median, best = statistics.median(r[0] for r in runs), min(r[0] for r in runs)
            print(f"--prepare_only, NSP 128, {size:.0f} MB, 2 processes: median {median:.2f} s = {size / median:.2f} MB/s "
                  f"(best {best:.2f} s = {size / best:.2f} MB/s), {max(r[1] for r in runs):.0f} MB peak RSS")
            if repeat == 1:
                print(f"  second run (cache reused): {timed_command(cmd)[0]:.2f} s")
        raw = raw_fugashi(corpus, 2, args.repeat)
        print(f"reference: fugashi wakati parse alone, 2 processes: {mb / raw:.2f} MB/s")
        seconds = transformers_map(corpus, tokenizer_dir)
        print(f"reference: BertJapaneseTokenizer via datasets.map(num_proc=2), tokenization only: {mb / seconds:.2f} MB/s")
