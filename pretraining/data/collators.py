"""Batch collation and dynamic masking.

Masks are drawn at batch time as a function of (seed, epoch, example index) alone, so an
example gets the same masks whatever the rank, worker or number of processes that sees it:
runs are reproducible and resumable on any topology. New runs draw them with counters
(masks.py, the whole batch at once); runs begun before draw them from one numpy Generator per
example (mask_tokens, mask_batch below), and keep doing so when continued.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .masks import IGNORE, mask_batch_counter


def example_rng(seed, epoch, index):
    return np.random.default_rng([seed, epoch, index])


@dataclass(frozen=True)
class Masking:
    """How the units to predict are chosen (preset keys "masking", "mask-percent", "max-ngrams",
    "span-geo-prob", "span-max-length")."""

    mode: str = "token"  # one of pretraining/presets.py MASKING_MODES
    rate: float = 0.15  # the share of the tokens predicted
    max_ngrams: int = 3  # ngram: whole-word n-grams up to this n, P(n) proportional to 1/n
    span_geo_prob: float = 0.2  # span: P(n) proportional to p (1 - p)^(n - 1), n up to span_max_length
    span_max_length: int = 10  # (SpanBERT's geometric lengths, clipped: a mean of 3.8 words at 0.2 and 10)
    # "counter": masks.py, for every run begun since; "generator": one numpy Generator per example
    # (mask_tokens, mask_batch), kept for the runs begun before, whose checkpoints record no mask_draws
    draws: str = "counter"

    @cached_property
    def length_probabilities(self):
        """ngram and span: P(a chosen unit covers n whole words), n = 1, 2, ..."""
        if self.mode == "ngram":
            weights = 1.0 / np.arange(1, self.max_ngrams + 1)
        else:
            weights = self.span_geo_prob * (1 - self.span_geo_prob) ** np.arange(self.span_max_length)
        return weights / weights.sum()

    @cached_property
    def _cumulative(self):
        cdf = self.length_probabilities.cumsum()
        return cdf / cdf[-1]

    def draw_length(self, rng):
        # rng.choice(n, p=...) draws one uniform and looks it up in the cumulative sums, as here; its
        # checks of p cost ten times the draw
        return 1 + int(self._cumulative.searchsorted(rng.random(), side="right"))


def _words(candidates, word_ids):
    """The MeCab words among the candidate positions: (the index into ``candidates`` of each word's
    first token, its count of tokens)."""
    first = np.flatnonzero(np.diff(word_ids[candidates], prepend=-2) != 0)
    return first, np.diff(first, append=len(candidates))


def _choose_units(sizes, rng, target):
    """BERT's choice: units (of ``sizes`` tokens) in a random order, each taken while the count stays
    within target; (their numbers in the order taken, the tokens they hold)."""
    chosen, count = [], 0
    for k in rng.permutation(len(sizes)).tolist():
        if count >= target:
            break
        if count + sizes[k] > target and count > 0:
            continue
        chosen.append(k)
        count += sizes[k]
    return np.array(chosen, dtype=np.int64), count


def _runs_of(first, sizes, chosen):
    """The positions (into the candidates) of the chosen units, unit after unit, without a Python loop."""
    starts, lengths = first[chosen], sizes[chosen]
    return np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())


def _choose_runs(candidates, first, sizes, rng, target, masking):
    """ngram and span: runs of consecutive whole words (``_words``), started at words in a random
    order, each run's length drawn (and shortened while it would pass the target or the end of its
    segment); a run that would overlap one already chosen is skipped. Returns each run's positions."""
    words = len(first)
    # a run never crosses a gap (a [SEP], the other segment): run_end[k] is one past k's segment
    last = candidates[first + sizes - 1]
    segment_ends = np.append(np.flatnonzero(candidates[first[1:]] != last[:-1] + 1) + 1, words)
    run_end = segment_ends[np.searchsorted(segment_ends, np.arange(words), side="right")].tolist()
    tokens_before = np.concatenate([[0], np.cumsum(sizes)]).tolist()  # tokens in words [k, k + n): a difference
    taken = np.zeros(words, dtype=bool)
    chosen, count = [], 0
    for k in rng.permutation(words).tolist():
        if count >= target:
            break
        n = min(masking.draw_length(rng), run_end[k] - k)
        while n > 1 and count + tokens_before[k + n] - tokens_before[k] > target:
            n -= 1
        tokens = tokens_before[k + n] - tokens_before[k]
        if taken[k:k + n].any() or (count + tokens > target and count > 0):
            continue
        taken[k:k + n] = True
        chosen.append(candidates[first[k]:first[k] + tokens])  # the words' tokens follow each other
        count += tokens
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
        chosen = _choose_runs(candidates, *_words(candidates, word_ids), rng, target, masking)
        action = np.repeat(rng.random(len(chosen)), [len(c) for c in chosen])
        positions = np.concatenate(chosen)
    elif masking.mode == "whole-word":  # units: runs of equal word id (the subwords of one MeCab word)
        first, sizes = _words(candidates, word_ids)
        positions = candidates[_runs_of(first, sizes, _choose_units(sizes.tolist(), rng, target)[0])]
        action = None
    else:  # tokens: _choose_units would take the first target of the order
        positions = candidates[rng.permutation(len(candidates))[:target]]
        action = None
    labels[positions] = ids[positions]
    if action is None:
        action = rng.random(len(positions))
    masked = ids.copy()
    masked[positions[action < 0.8]] = mask_id
    random_positions = positions[(action >= 0.8) & (action < 0.9)]
    masked[random_positions] = rng.integers(0, vocab_size, size=len(random_positions))
    return masked, labels


def mask_batch(ids, word_ids, lengths, keys, seed, mask_id, vocab_size, masking):
    """``mask_tokens`` of every example of a batch laid end to end (``lengths`` each), token and
    whole-word masking: the same masks, bit for bit, with numpy doing the work over the whole batch
    and each example's generator (``keys``: (epoch, index)) making only its own draws.
    Returns (masked ids, labels), flat."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    candidates = np.flatnonzero(word_ids >= 0)
    row = np.repeat(np.arange(len(lengths)), lengths)[candidates]
    # units: each candidate token, or each run of one word id among a row's candidates
    first_flags = np.ones(len(candidates), dtype=bool)
    if masking.mode == "whole-word":
        words = word_ids[candidates]
        first_flags[1:] = (words[1:] != words[:-1]) | (row[1:] != row[:-1])
    unit_first = np.flatnonzero(first_flags)
    unit_sizes = np.diff(unit_first, append=len(candidates))
    units_per_row = np.bincount(row[unit_first], minlength=len(lengths))
    unit_start = np.concatenate([[0], np.cumsum(units_per_row)])
    candidates_per_row = np.bincount(row, minlength=len(lengths)).tolist()
    sizes = unit_sizes.tolist() if masking.mode == "whole-word" else None
    chosen, actions, random_ids = [], [], []
    for k, (epoch, index) in enumerate(keys):
        if candidates_per_row[k] == 0:
            continue
        target = max(1, int(round(candidates_per_row[k] * masking.rate)))
        rng = example_rng(seed, epoch, index)
        if sizes is None:  # tokens: the first target of a random order
            mine = rng.permutation(int(units_per_row[k]))[:target]
            count = len(mine)
        else:
            mine, count = _choose_units(sizes[unit_start[k]:unit_start[k + 1]], rng, target)
        chosen.append(mine + unit_start[k])
        action = rng.random(count)
        actions.append(action)
        random_ids.append(rng.integers(0, vocab_size, size=int(((action >= 0.8) & (action < 0.9)).sum())))
    labels = np.full(offsets[-1], IGNORE, dtype=np.int64)
    masked = ids.copy()
    if chosen:
        positions = candidates[_runs_of(unit_first, unit_sizes, np.concatenate(chosen))]
        action = np.concatenate(actions)
        labels[positions] = ids[positions]
        masked[positions[action < 0.8]] = mask_id
        masked[positions[(action >= 0.8) & (action < 0.9)]] = np.concatenate(random_ids)
    return masked, labels


def _pad_flat(values, present, fill):
    """Rows laid end to end -> (rows, longest) padded with ``fill``; ``present``: where the rows' tokens go."""
    out = np.full(present.shape, fill, dtype=np.int64)
    out[present] = values
    return torch.from_numpy(out)


class MaskedLMCollator:
    """MLM (with NSP/SOP labels when the examples have them) for BERT, ALBERT, ELECTRA, RoBERTa,
    DeBERTa, ModernBERT."""

    def __init__(self, mask_id, pad_id, vocab_size, seed, masking=Masking()):
        self.mask_id, self.pad_id, self.vocab_size = mask_id, pad_id, vocab_size
        self.seed, self.masking = seed, masking

    def __call__(self, items):
        lengths = np.array([len(i["input_ids"]) for i in items])
        ids = np.concatenate([np.asarray(i["input_ids"], dtype=np.int64) for i in items])
        word_ids = np.concatenate([np.asarray(i["word_ids"], dtype=np.int64) for i in items])
        keys = [(i["epoch"], i["index"]) for i in items]
        if self.masking.draws == "counter":
            epochs, indices = np.array(keys, dtype=np.int64).reshape(-1, 2).T
            masked, labels = mask_batch_counter(ids, word_ids, lengths, epochs, indices, self.seed, self.mask_id,
                                                self.vocab_size, self.masking)
        elif self.masking.mode in ("token", "whole-word"):
            masked, labels = mask_batch(ids, word_ids, lengths, keys, self.seed, self.mask_id, self.vocab_size,
                                        self.masking)
        else:
            pairs = [mask_tokens(i["input_ids"], i["word_ids"], example_rng(self.seed, *key), self.mask_id,
                                 self.vocab_size, self.masking) for i, key in zip(items, keys)]
            masked, labels = (np.concatenate(part) for part in zip(*pairs))
        present = np.arange(lengths.max()) < lengths[:, None]  # (rows, longest): a token, not padding
        batch = {
            "input_ids": _pad_flat(masked, present, self.pad_id),
            "labels": _pad_flat(labels, present, IGNORE),
            "attention_mask": torch.from_numpy(present.astype(np.int64)),
        }
        # the masked positions as flat indices into (batch, length), and their labels: the model
        # selects them with index_select, whose size is known on the host (no device sync)
        flat = batch["labels"].reshape(-1)
        batch["mlm_positions"] = torch.from_numpy(np.flatnonzero(flat.numpy() != IGNORE))
        batch["mlm_labels"] = flat[batch["mlm_positions"]]
        if "token_type_ids" in items[0]:
            types = np.concatenate([np.asarray(i["token_type_ids"], dtype=np.int64) for i in items])
            batch["token_type_ids"] = _pad_flat(types, present, 0)
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
