"""Batch collation and dynamic masking.

Masks are drawn at batch time from a generator seeded by (seed, epoch, example index),
so an example gets the same masks whatever the rank, worker or number of processes
that sees it: runs are reproducible and resumable on any topology.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

IGNORE = -100


def example_rng(seed, epoch, index):
    return np.random.default_rng([seed, epoch, index])


MASKING_MODES = ("token", "whole-word", "ngram", "span")


@dataclass(frozen=True)
class Masking:
    """How the units to predict are chosen (preset keys "masking", "mask-percent", "max-ngrams",
    "span-geo-prob", "span-max-length")."""

    mode: str = "token"  # one of MASKING_MODES
    rate: float = 0.15  # the share of the tokens predicted
    max_ngrams: int = 3  # ngram: whole-word n-grams up to this n, P(n) proportional to 1/n
    span_geo_prob: float = 0.2  # span: P(n) proportional to p (1 - p)^(n - 1), n up to span_max_length
    span_max_length: int = 10  # (SpanBERT's geometric lengths, clipped: a mean of 3.8 words at 0.2 and 10)

    @cached_property
    def length_probabilities(self):
        """ngram and span: P(a chosen unit covers n whole words), n = 1, 2, ..."""
        if self.mode == "ngram":
            weights = 1.0 / np.arange(1, self.max_ngrams + 1)
        else:
            weights = self.span_geo_prob * (1 - self.span_geo_prob) ** np.arange(self.span_max_length)
        return weights / weights.sum()

    def draw_length(self, rng):
        return 1 + int(rng.choice(len(self.length_probabilities), p=self.length_probabilities))


def _words(candidates, word_ids):
    """The MeCab words among the candidate positions: one array of positions each."""
    starts = np.flatnonzero(np.diff(word_ids[candidates], prepend=-2) != 0)
    return np.split(candidates, starts[1:])


def _choose_units(units, rng, target):
    """BERT's choice: units in a random order, each taken while the count stays within target."""
    chosen, count = [], 0
    for k in rng.permutation(len(units)):
        if count >= target:
            break
        if count + len(units[k]) > target and count > 0:
            continue
        chosen.append(units[k])
        count += len(units[k])
    return chosen


def _choose_runs(words, rng, target, masking):
    """ngram and span: runs of consecutive whole words, started at words in a random order, each
    run's length drawn (and shortened while it would pass the target or the end of its segment);
    a run that would overlap one already chosen is skipped."""
    # a run never crosses a gap (a [SEP], the other segment): run_end[k] is one past k's segment
    adjacent = np.array([words[k + 1][0] == words[k][-1] + 1 for k in range(len(words) - 1)], dtype=bool)
    run_end = np.empty(len(words), dtype=np.int64)
    end = len(words)
    for k in range(len(words) - 1, -1, -1):
        run_end[k] = end
        if k > 0 and not adjacent[k - 1]:
            end = k
    taken = np.zeros(len(words), dtype=bool)
    sizes = np.array([len(w) for w in words])
    chosen, count = [], 0
    for k in rng.permutation(len(words)):
        if count >= target:
            break
        n = min(masking.draw_length(rng), run_end[k] - k)
        while n > 1 and count + sizes[k:k + n].sum() > target:
            n -= 1
        if taken[k:k + n].any() or (count + sizes[k:k + n].sum() > target and count > 0):
            continue
        taken[k:k + n] = True
        chosen.append(np.concatenate(words[k:k + n]))
        count += int(sizes[k:k + n].sum())
    return chosen


def mask_tokens(ids, word_ids, rng, mask_id, vocab_size, masking=Masking()):
    """Masking of one example: returns (masked ids, labels).

    About ``masking.rate`` of the tokens are predicted (at least one); of those 80% become
    [MASK], 10% a random token and 10% stay. The units chosen are tokens ("token"), MeCab words
    with every subword ("whole-word"), whole-word n-grams ("ngram", as ERNIE and Megatron) or
    spans of whole words of geometric length ("span", SpanBERT). For n-grams and spans the
    80/10/10 choice is made once a unit, as SpanBERT does: a unit is all [MASK], all random or
    all kept.
    """
    ids = np.asarray(ids, dtype=np.int64)
    word_ids = np.asarray(word_ids, dtype=np.int64)
    candidates = np.flatnonzero(word_ids >= 0)
    labels = np.full(ids.shape, IGNORE, dtype=np.int64)
    if len(candidates) == 0:
        return ids, labels
    target = max(1, int(round(len(candidates) * masking.rate)))
    if masking.mode in ("ngram", "span"):
        chosen = _choose_runs(_words(candidates, word_ids), rng, target, masking)
        action = np.repeat(rng.random(len(chosen)), [len(c) for c in chosen])
    else:
        units = (_words(candidates, word_ids) if masking.mode == "whole-word"
                 else [candidates[k : k + 1] for k in range(len(candidates))])
        chosen = _choose_units(units, rng, target)
        action = None
    positions = np.concatenate(chosen)
    labels[positions] = ids[positions]
    if action is None:
        action = rng.random(len(positions))
    masked = ids.copy()
    masked[positions[action < 0.8]] = mask_id
    random_positions = positions[(action >= 0.8) & (action < 0.9)]
    masked[random_positions] = rng.integers(0, vocab_size, size=len(random_positions))
    return masked, labels


def _pad(rows, value, length):
    out = np.full((len(rows), length), value, dtype=np.int64)
    for k, row in enumerate(rows):
        out[k, : len(row)] = row
    return torch.from_numpy(out)


class MaskedLMCollator:
    """MLM (with NSP/SOP labels when the examples have them) for BERT, ALBERT, ELECTRA, RoBERTa."""

    def __init__(self, mask_id, pad_id, vocab_size, seed, masking=Masking()):
        self.mask_id, self.pad_id, self.vocab_size = mask_id, pad_id, vocab_size
        self.seed, self.masking = seed, masking

    def __call__(self, items):
        masked, labels = [], []
        for item in items:
            rng = example_rng(self.seed, item["epoch"], item["index"])
            ids, lab = mask_tokens(item["input_ids"], item["word_ids"], rng, self.mask_id, self.vocab_size,
                                   self.masking)
            masked.append(ids)
            labels.append(lab)
        length = max(len(m) for m in masked)
        batch = {
            "input_ids": _pad(masked, self.pad_id, length),
            "labels": _pad(labels, IGNORE, length),
            "attention_mask": _pad([np.ones(len(m)) for m in masked], 0, length),
        }
        # the masked positions as flat indices into (batch, length), and their labels: the model
        # selects them with index_select, whose size is known on the host (no device sync)
        flat = batch["labels"].reshape(-1)
        batch["mlm_positions"] = torch.from_numpy(np.flatnonzero(flat.numpy() != IGNORE))
        batch["mlm_labels"] = flat[batch["mlm_positions"]]
        if "token_type_ids" in items[0]:
            batch["token_type_ids"] = _pad([i["token_type_ids"] for i in items], 0, length)
        for name in ("next_sentence_label", "sentence_order_label"):
            if name in items[0]:
                batch[name] = torch.tensor([i[name] for i in items], dtype=torch.long)
        return batch


class CausalLMCollator:
    """Packed blocks of equal length: the model predicts each next token."""

    def __call__(self, items):
        return {"input_ids": torch.tensor(np.stack([np.asarray(i["input_ids"]) for i in items]), dtype=torch.long)}


class Seq2SeqCollator:
    """T5 span corruption: inputs and targets already have their exact lengths."""

    def __call__(self, items):
        return {
            "input_ids": torch.tensor(np.stack([np.asarray(i["input_ids"]) for i in items]), dtype=torch.long),
            "labels": torch.tensor(np.stack([np.asarray(i["labels"]) for i in items]), dtype=torch.long),
        }
