"""One training step of the project's model against the stock transformers computation, same batches.

    python benchmarks/bench_step.py [--steps 8] [--families bert,gpt2,roberta,llama,deberta,modernbert]

BERT: 4 layers, hidden 256, sequence 512, vocabulary 32768, batch 8; stock is BertForPreTraining
with its full MLM head and its own loss, ours the training forward of pretraining/families/
(MLM head at the masked positions only). GPT-2: the same sizes; stock is GPT2LMHeadModel's loss,
ours the chunked output-layer loss. RoBERTa, DeBERTa-v2, ModernBERT and Llama: the same sizes
against RobertaForMaskedLM's, DebertaV2ForMaskedLM's, ModernBertForMaskedLM's and
LlamaForCausalLM's own losses (Llama with 2 key-value heads, ModernBERT with its window of 128 and
a global layer every 3, DeBERTa with 256 position buckets). Both sides use the same weights,
batches, AdamW and clipping;
steps alternate between the two so that the machine's drift hits both alike. Prints the median
seconds per step, tokens per second and the speed-up. Needs no corpus: the batches are random ids
masked by the project's collator.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pretraining.modeling import install  # noqa: E402
from pretraining.data.collators import MaskedLMCollator  # noqa: E402
from pretraining.presets import parse_preset  # noqa: E402
from pretraining.families import FAMILIES, Vocabulary  # noqa: E402

SIZES = {"number-of-layers": 4, "hidden-size": 256, "ffn-inner-hidden-size": 1024, "attention-heads": 4,
         "sequence-length": 512, "learning-rate": 1e-4, "batch-size": {"-1": 8}, "train-steps": 1, "save-steps": 1,
         "logging-steps": 1, "dropout": 0.1}
EXTRA = {"llama": {"key-value-heads": 2}}
PACKED_MLM = ("roberta", "deberta", "modernbert")  # masked LM on packed blocks: no pairs, no token types
CAUSAL = ("gpt2", "llama")
LABELS = {"bert": "BertForPreTraining, full MLM head", "gpt2": "GPT2LMHeadModel, stock loss",
          "roberta": "RobertaForMaskedLM, full MLM head", "llama": "LlamaForCausalLM, stock loss",
          "deberta": "DebertaV2ForMaskedLM, full MLM head", "modernbert": "ModernBertForMaskedLM, full MLM head"}


def batches(family, vocab, count, rows, length, seed=0):
    rng = np.random.default_rng(seed)
    if family in CAUSAL:
        return [{"input_ids": torch.from_numpy(rng.integers(5, vocab.size, (rows, length)))} for _ in range(count)]
    pairs = family not in PACKED_MLM
    collator = MaskedLMCollator(vocab.mask_id, vocab.pad_id, vocab.size, seed)
    out = []
    for _ in range(count):
        items = [{"input_ids": rng.integers(5, vocab.size, length).tolist(), "word_ids": list(range(length)),
                  "epoch": 0, "index": k} for k in range(rows)]
        for item in items if pairs else []:
            item.update(token_type_ids=[0] * (length // 2) + [1] * (length - length // 2),
                        next_sentence_label=int(rng.integers(0, 2)))
        out.append(collator(items))
    return out


def stock_loss(family, model, batch):
    if family in CAUSAL:
        return model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
    if family in PACKED_MLM:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 token_type_ids=batch["token_type_ids"], labels=batch["labels"],
                 next_sentence_label=batch["next_sentence_label"]).loss


def our_loss(model, batch):
    losses = model(batch)
    return sum(total / count.clamp(min=1) for total, count in losses.values())


class Side:
    """A model, its optimizer and its step."""

    def __init__(self, family, vocab, ours):
        spec = FAMILIES[family]
        torch.manual_seed(0)
        preset = parse_preset(f"{family}-bench", dict(SIZES, **EXTRA.get(family, {})))
        self.model = spec.create(preset, vocab).train()
        if ours:
            install(self.model, spec.training_forward)
        self.family, self.ours = family, ours
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=True)

    def step(self, batch):
        started = time.perf_counter()
        loss = our_loss(self.model, batch) if self.ours else stock_loss(self.family, self.model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started, float(loss.detach())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per side (after 2 warm-up steps)")
    parser.add_argument("--families", default="bert,gpt2")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vocab = Vocabulary(size=32768, pad_id=0, cls_id=2, sep_id=3, mask_id=4)
    rows, length = SIZES["batch-size"]["-1"], SIZES["sequence-length"]
    print(f"torch {torch.__version__}, {args.threads} threads; 4 layers x 256, sequence {length}, vocabulary "
          f"{vocab.size}, batch {rows}")
    for family in args.families.split(","):
        stock, ours = Side(family, vocab, ours=False), Side(family, vocab, ours=True)
        data = batches(family, vocab, args.steps + 2, rows, length)
        times = {"stock": [], "ours": []}
        for k, batch in enumerate(data):
            for name, side in (("stock", stock), ("ours", ours)) if k % 2 == 0 else (("ours", ours), ("stock", stock)):
                seconds, loss = side.step(batch)
                if k >= 2:
                    times[name].append(seconds)
        tokens = rows * length
        stock_s, ours_s = statistics.median(times["stock"]), statistics.median(times["ours"])
        label = LABELS[family]
        print(f"{family}: stock ({label}) {stock_s:.3f} s/step, {tokens / stock_s:,.0f} tokens/s; ours {ours_s:.3f} "
              f"s/step, {tokens / ours_s:,.0f} tokens/s; ours is {stock_s / ours_s:.2f}x stock")


if __name__ == "__main__":
    main()
