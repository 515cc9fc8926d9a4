"""Batches per second from the stored examples: read, expand, mask, pad; against what one GPU eats.

    python benchmarks/bench_loader.py [--kinds nsp,sop,packed] [--lengths 128,512]
        [--masking token,whole-word,ngram,span] [--draws counter|generator] [--workers 2] [--batch 32] [--seconds 3] [--work DIR]

For each example kind (nsp: BERT, sop: ALBERT, packed: RoBERTa and the other packed MLM families),
sequence length and masking mode, on examples built from the Aozora corpus with a 32k WordPiece
tokenizer:

- examples/s on one core: the training process's work per batch with --dataloader_num_workers 0
  (torch and BLAS on one thread), masks drawn as new runs draw them (--draws counter) or as runs
  begun before the counter draws (--draws generator);
- examples/s with N loader workers (DataLoader, as the training loop builds it);
- the demand of one H100 at 40% MFU training the family's base preset at that length (its FLOP
  formula, pretraining/flops.py: examples/s = 0.4 x 989 TFLOP/s / FLOPs per example);
- the stock reference: the same examples through transformers' DataCollatorForLanguageModeling,
  token masking and whole_word_mask=True (words given by offsets made from our word starts),
  on one core.
"""

import argparse
import itertools
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import aozora_corpus  # noqa: E402

BASE_PRESETS = {"nsp": "bert-base", "sop": "albert-base", "packed": "roberta-base"}
H100_PEAK, MFU = 989e12, 0.4


def examples_for(kind, length, corpus, tokenizer_dir, work):
    from pretraining.data.build import ExampleSpec
    from pretraining.data.cache import load_examples, prepare_examples

    folder = prepare_examples([corpus], tokenizer_dir, ExampleSpec(kind, length),
                              dataset_dir=os.path.join(work, f"{kind}-{length}"), show_progress=False)
    return load_examples(folder)[0]


def gpu_demand(kind, length, vocab_size):
    """Examples/s one H100 at 40% MFU trains the kind's base preset on."""
    from pretraining.families import FAMILIES, Vocabulary
    from pretraining.presets import load_preset

    preset = load_preset(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "parameter.json"),
                         BASE_PRESETS[kind])
    family = FAMILIES[preset.family]
    with torch.device("meta"):
        model = family.create(preset, Vocabulary(vocab_size, 0, 2, 3, 4))
    batch = {"input_ids": torch.empty(1, length), "mlm_positions": torch.empty(round(length * preset.mask_percent / 100))}
    return MFU * H100_PEAK / family.flops(model)(batch)


def collator_for(encoder, mode, draws="counter"):
    from pretraining.data.collators import MaskedLMCollator, Masking

    return MaskedLMCollator(encoder.token_id("[MASK]"), encoder.token_id("[PAD]"), encoder.vocab_size, 42,
                            Masking(mode, draws=draws))


def per_core(dataset, collator, batch, seconds):
    """Examples/s of the in-process path: the sampler's indices -> a masked batch."""
    from pretraining.data.sampler import GlobalBatchSampler, IndexedExamples

    examples = IndexedExamples(dataset)
    sampler = GlobalBatchSampler(len(dataset), [batch], 0, 42)
    collator(examples.__getitems__(sampler.indices_for_step(0)))  # warm
    done, started, step = 0, time.perf_counter(), 1
    while time.perf_counter() - started < seconds:
        collator(examples.__getitems__(sampler.indices_for_step(step)))
        done, step = done + batch, step + 1
    return done / (time.perf_counter() - started)


def with_workers(dataset, collator, batch, workers, seconds):
    from pretraining.data.sampler import GlobalBatchSampler, IndexedExamples
    from pretraining.distributed import start_loader_worker
    import functools

    loader = torch.utils.data.DataLoader(IndexedExamples(dataset), batch_sampler=GlobalBatchSampler(len(dataset), [batch], 0, 42),
                                         collate_fn=collator, num_workers=workers, prefetch_factor=4,
                                         persistent_workers=True,
                                         worker_init_fn=functools.partial(start_loader_worker, ()))
    batches = iter(loader)
    for _ in range(workers * 4):  # the workers started and their queues full
        next(batches)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        next(batches)
        done += batch
    rate = done / (time.perf_counter() - started)
    del batches
    return rate


def stock(dataset, tokenizer, whole_word, batch, seconds):
    """transformers' collator on the same examples (word boundaries as character offsets)."""
    from transformers import DataCollatorForLanguageModeling

    from pretraining.data.storage import word_ids_of

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, whole_word_mask=whole_word, seed=42)
    columns = ("input_ids", "word_starts", "specials")
    raw = dataset.with_format(None).select_columns([c for c in columns if c in dataset.column_names])

    def items(indices):
        """Rows padded to the batch's longest (the tokenizer's pad cannot pad offsets)."""
        out = []
        rows = raw[indices]
        longest = max(len(ids) for ids in rows["input_ids"])
        for k in range(len(indices)):
            ids = rows["input_ids"][k]
            pad = longest - len(ids)
            item = {"input_ids": ids + [tokenizer.pad_token_id] * pad, "attention_mask": [1] * len(ids) + [0] * pad,
                    "special_tokens_mask": [int(s) for s in rows["specials"][k]] + [1] * pad}
            if whole_word:  # a token continuing a word touches the one before; a new word leaves a gap
                words = word_ids_of(rows["word_starts"][k], rows["specials"][k])
                starts = np.cumsum([2 if j == 0 or w != words[j - 1] else 1 for j, w in enumerate(words)])
                item["offset_mapping"] = [[int(s), int(s) + 1] for s in starts] + [[0, 0]] * pad
            out.append(item)
        return out

    order = np.random.default_rng(0).permutation(len(dataset))
    starts = itertools.cycle(range(0, len(order) - batch + 1, batch))  # epochs over the examples, in batches
    chunks = (order[k:k + batch].tolist() for k in starts)
    collator(items(next(chunks)))
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        collator(items(next(chunks)))
        done += batch
    return done / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="nsp,sop,packed")
    parser.add_argument("--lengths", default="128,512")
    parser.add_argument("--masking", default="token,whole-word,ngram,span")
    parser.add_argument("--draws", default="counter", choices=("counter", "generator"),
                        help="how masks are drawn: counter (runs begun now) or generator (runs begun before it)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--no_stock", action="store_true", help="skip transformers' collator")
    parser.add_argument("--work", help="where the tokenizer and examples are kept (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="bench-loader-")
    os.makedirs(work, exist_ok=True)
    torch.set_num_threads(1)
    os.environ.setdefault("JA_PRETRAINING_CACHE", os.path.join(work, "cache"))

    from tokenizer.encoder import SubwordEncoder
    from tokenizer.train import TokenizerSettings, train_tokenizer

    corpus = aozora_corpus(work)
    tokenizer_dir = os.path.join(work, "tokenizer")
    if not os.path.isdir(tokenizer_dir):
        train_tokenizer([corpus], tokenizer_dir, TokenizerSettings(vocab_size=32768), show_progress=False)
    encoder = SubwordEncoder(tokenizer_dir)
    tokenizer = None
    if not args.no_stock:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    print(f"examples/s; one core unless said; batches of {args.batch}; {args.workers} workers; "
          f"H100 demand at {MFU:.0%} MFU; {args.draws} draws")
    print(f"{'kind':6} {'length':>6} {'masking':10} {'1 core':>9} {f'{args.workers} workers':>10} {'H100':>8} "
          f"{'stock':>9} {'ours/stock':>10}")
    for kind in args.kinds.split(","):
        for length in map(int, args.lengths.split(",")):
            dataset = examples_for(kind, length, corpus, tokenizer_dir, work)
            demand = gpu_demand(kind, length, encoder.vocab_size)
            for mode in args.masking.split(","):
                collator = collator_for(encoder, mode, args.draws)
                ours = per_core(dataset, collator, args.batch, args.seconds)
                parallel = with_workers(dataset, collator, args.batch, args.workers, args.seconds)
                reference = ""
                if tokenizer is not None and mode in ("token", "whole-word"):
                    rate = stock(dataset, tokenizer, mode == "whole-word", args.batch, args.seconds)
                    reference = f"{rate:9,.0f} {ours / rate:9.2f}x"
                print(f"{kind:6} {length:6} {mode:10} {ours:9,.0f} {parallel:10,.0f} {demand:8,.0f} {reference}",
                      flush=True)


if __name__ == "__main__":
    main()
