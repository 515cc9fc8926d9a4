"""Raw text -> cached BERT NSP examples (length 128) on the Aozora corpus.

Prints MB/s and peak memory of run_pretraining.py --prepare_only at 1x and 10x the
corpus, and, side by side on the same text, transformers' BertJapaneseTokenizer through
datasets.map(num_proc=2) (tokenization only, no examples).

    python benchmarks/bench_examples.py
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import ROOT, aozora_corpus, timed_command  # noqa: E402




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


if __name__ == "__main__":
    import json

    with tempfile.TemporaryDirectory() as work:
        corpus = aozora_corpus(work)
        mb = os.path.getsize(corpus) / 1e6
        tokenizer_dir = os.path.join(work, "tok")
        timed_command([sys.executable, os.path.join(ROOT, "train_tokenizer.py"), "--input_file", corpus,
                       "--model_dir", tokenizer_dir, "--vocab_size", "32768", "--num_files", "2", "--quiet"])
        presets = json.load(open(os.path.join(ROOT, "parameter.json")))
        preset = dict(presets["bert-base"], **{"sequence-length": 128})
        params = os.path.join(work, "parameter.json")
        json.dump({"bert-base-128": preset}, open(params, "w"))
        for repeat in (1, 10):
            path = aozora_corpus(work, repeat)
            size = os.path.getsize(path) / 1e6
            cmd = [sys.executable, os.path.join(ROOT, "run_pretraining.py"), "--prepare_only", "--input_file", path,
                   "--tokenizer_dir", tokenizer_dir, "--parameter_file", params, "--model_type", "bert-base-128",
                   "--dataset_dir", os.path.join(work, f"examples-{repeat}"), "--overwrite_cache"]
            seconds, peak, _ = timed_command(cmd)
            print(f"--prepare_only, NSP 128, {size:.0f} MB, 2 processes: {seconds:.2f} s, {size / seconds:.2f} MB/s, "
                  f"{peak:.0f} MB peak RSS (largest process)")
            if repeat == 1:
                seconds_cached, _, _ = timed_command(cmd[:-1])
                print(f"  second run (cache reused): {seconds_cached:.2f} s")
        seconds = transformers_map(corpus, tokenizer_dir)
        print(f"reference: BertJapaneseTokenizer via datasets.map(num_proc=2), tokenization only: {mb / seconds:.2f} MB/s")
