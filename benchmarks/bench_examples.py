"""Raw text -> cached BERT NSP examples (length 128) on the Aozora corpus.

Prints the wall time (median of --repeat runs, and the best), MB/s and peak memory of
``run_pretraining.py --prepare_only`` with 2 processes, at 1x the corpus with the default
dictionary (unidic-lite) and with ipadic when it is installed (``pip install ipadic``),
then at 10x with unidic-lite. Each 1x run is paired with a run of fugashi's wakati parse
alone on the same text (the floor for anything that runs MeCab on this machine), so the
ratio holds even when the machine's speed drifts. Last, transformers'
BertJapaneseTokenizer through datasets.map(num_proc=2) (tokenization only, no examples).

    python benchmarks/bench_examples.py [--repeat 5]
"""

import argparse
import importlib.util
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


def train_tokenizer(corpus, out_dir, mecab_dic):
    timed_command([sys.executable, os.path.join(ROOT, "train_tokenizer.py"), "--input_file", corpus,
                   "--model_dir", out_dir, "--vocab_size", "32768", "--num_files", "2", "--mecab_dic_type", mecab_dic,
                   "--quiet"])


def prepare_command(corpus, tokenizer_dir, params, out_dir):
    return [sys.executable, os.path.join(ROOT, "run_pretraining.py"), "--prepare_only", "--input_file", corpus,
            "--tokenizer_dir", tokenizer_dir, "--parameter_file", params, "--model_type", "bert-base-128",
            "--dataset_dir", out_dir, "--num_proc", "2"]


def median_line(label, size, seconds):
    median, best = statistics.median(seconds), min(seconds)
    return f"{label}, {size:.0f} MB: median {median:.2f} s = {size / median:.2f} MB/s (best {size / best:.2f} MB/s)"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        corpus = aozora_corpus(work)
        mb = os.path.getsize(corpus) / 1e6
        presets = json.load(open(os.path.join(ROOT, "parameter.json")))
        params = os.path.join(work, "parameter.json")
        json.dump({"bert-base-128": dict(presets["bert-base"], **{"sequence-length": 128})}, open(params, "w"))
        print(f"corpus: {mb:.1f} MB, {os.cpu_count()} cores; --prepare_only, NSP 128, 2 processes")
        dictionaries = ["unidic_lite"] + (["ipadic"] if importlib.util.find_spec("ipadic") else [])
        for dic in dictionaries:
            tokenizer_dir = os.path.join(work, f"tok-{dic}")
            train_tokenizer(corpus, tokenizer_dir, dic)
            cmd = prepare_command(corpus, tokenizer_dir, params, os.path.join(work, f"examples-{dic}"))
            # ours and MeCab alone in turns, so both see the same moments of a noisy machine
            ours, raw, peak = [], [], 0
            for _ in range(args.repeat):
                seconds, rss, _ = timed_command(cmd + ["--overwrite_cache"])
                ours.append(seconds)
                peak = max(peak, rss)
                raw.append(raw_fugashi(corpus, 2, 1, dic))
            ratio = statistics.median(r / o for r, o in zip(raw, ours))
            print(f"{median_line(dic, mb, ours)}, {peak:.0f} MB peak RSS")
            print(f"  {median_line(f'fugashi wakati parse alone ({dic})', mb, raw)}; ours runs at {100 * ratio:.0f}% "
                  "of its speed (median over the paired runs)")
            print(f"  second run (cache reused): {timed_command(cmd)[0]:.2f} s")
        path = aozora_corpus(work, 10)
        size = os.path.getsize(path) / 1e6
        cmd = prepare_command(path, os.path.join(work, "tok-unidic_lite"), params, os.path.join(work, "examples-10x"))
        runs = [timed_command(cmd + ["--overwrite_cache"]) for _ in range(2)]
        print(f"{median_line('unidic_lite', size, [r[0] for r in runs])}, {max(r[1] for r in runs):.0f} MB peak RSS")
        seconds = transformers_map(corpus, os.path.join(work, "tok-unidic_lite"))
        print(f"reference: BertJapaneseTokenizer via datasets.map(num_proc=2), tokenization only: {mb / seconds:.2f} MB/s")
