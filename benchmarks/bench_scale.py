"""The example build at scale: throughput, peak memory, bytes on disk per token, loader cost per step.

    python benchmarks/bench_scale.py [--sizes 1,10] [--kinds nsp,packed,span] [--root DIR] [--work DIR]

For each example kind at sequence length 128 (nsp: BERT, packed: GPT-2, span: T5) and each
size (the Aozora corpus concatenated 1 and 10 times): ``run_pretraining.py --prepare_only``
with 2 processes, printing MB of text per second, the peak RSS of its largest process, the
bytes of the data files per token of input_ids, and the time to read and collate one step of
32 examples (BERT masking with whole words, GPT-2 blocks, T5 pairs; mean over 100 steps).

``--root`` runs another checkout of the project (e.g. the commit before a change) with this
same script, for before/after figures.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import ROOT, aozora_corpus, timed_command  # noqa: E402

PRESETS = {"nsp": "bert-base", "packed": "gpt2-small", "span": "t5-small"}

# run in a fresh process with the checkout under test first on the path
LOADER_COST = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pretraining.data.collators import CausalLMCollator, MaskedLMCollator, Seq2SeqCollator
from pretraining.data.cache import load_examples
from pretraining.data.sampler import GlobalBatchSampler, IndexedExamples
from tokenizer.encoder import SubwordEncoder
folder, tokenizer_dir, kind = sys.argv[2:5]
encoder = SubwordEncoder(tokenizer_dir)
try:  # since --masking: a Masking; before it, a whole_word switch
    from pretraining.data.collators import Masking
    whole_word = dict(masking=Masking("whole-word"))
except ImportError:
    whole_word = dict(whole_word=True)
collator = {"nsp": MaskedLMCollator(encoder.token_id("[MASK]"), encoder.token_id("[PAD]"), encoder.vocab_size, 42,
                                    **whole_word),
            "packed": CausalLMCollator(), "span": Seq2SeqCollator()}[kind]
dataset = IndexedExamples(load_examples(folder)[0])
sampler = GlobalBatchSampler(len(dataset), [32], 0, 42)
collator(dataset.__getitems__(sampler.indices_for_step(0)))
started = time.perf_counter()
for step in range(1, 101):
    collator(dataset.__getitems__(sampler.indices_for_step(step)))
print((time.perf_counter() - started) / 100)
"""


def data_bytes_per_token(folder):
    import pyarrow as pa

    names = [n for n in os.listdir(folder) if n.startswith("data-") and n.endswith(".arrow")]
    size = tokens = 0
    for name in names:
        path = os.path.join(folder, name)
        size += os.path.getsize(path)
        with pa.memory_map(path) as source:
            for batch in pa.ipc.open_stream(source):
                tokens += len(batch.column("input_ids").flatten())
    return size / tokens, tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10")
    parser.add_argument("--kinds", default="nsp,packed,span")
    parser.add_argument("--root", default=ROOT, help="the checkout whose run_pretraining.py is measured")
    parser.add_argument("--work", help="keep the corpora and tokenizer here (default: a temporary folder)")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or temporary
        os.makedirs(work, exist_ok=True)
        tokenizer_dir = os.path.join(work, "tok-32768")
        if not os.path.isdir(tokenizer_dir):
            timed_command([sys.executable, os.path.join(ROOT, "train_tokenizer.py"), "--input_file",
                           aozora_corpus(work), "--model_dir", tokenizer_dir, "--num_files", "2", "--quiet"])
        presets = json.load(open(os.path.join(root, "parameter.json")))
        params = os.path.join(work, "parameter.json")
        json.dump({f"{name}-128": dict(presets[name], **{"sequence-length": 128}) for name in PRESETS.values()},
                  open(params, "w"))
        print(f"checkout {root}; --prepare_only, length 128, 2 processes, WordPiece 32768")
        for size in map(int, args.sizes.split(",")):
            corpus = aozora_corpus(work, size)
            mb = os.path.getsize(corpus) / 1e6
            for kind in args.kinds.split(","):
                folder = os.path.join(work, f"examples-{kind}-x{size}")
                seconds, rss, _ = timed_command([
                    sys.executable, os.path.join(root, "run_pretraining.py"), "--prepare_only", "--input_file", corpus,
                    "--tokenizer_dir", tokenizer_dir, "--parameter_file", params, "--model_type", f"{PRESETS[kind]}-128",
                    "--dataset_dir", folder, "--num_proc", "2", "--overwrite_cache"])
                per_token, tokens = data_bytes_per_token(folder)
                step = float(subprocess.run([sys.executable, "-c", LOADER_COST, root, folder, tokenizer_dir, kind],
                                            capture_output=True, text=True, check=True).stdout)
                print(f"{kind:6s} {size:2d}x {mb:5.0f} MB: {seconds:6.1f} s = {mb / seconds:.2f} MB/s, peak RSS "
                      f"{rss:.0f} MB, {per_token:.2f} bytes/token ({tokens / 1e6:.1f}M tokens), loader "
                      f"{step * 1e3:.1f} ms per step of 32", flush=True)


if __name__ == "__main__":
    main()
