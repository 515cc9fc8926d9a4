"""Masking modes (token, whole-word, ngram, span): their statistics over many examples, with the
per-example generators of older runs and the counter draws of new ones."""

import numpy as np
import pytest
import torch

from pretraining.data.collators import (IGNORE, Masking, MaskedLMCollator, _choose_runs, _words, example_rng, mask_batch,
                                        mask_tokens)
from pretraining.data.masks import _segment_runs, example_keys, mask_batch_counter

# two segments of MeCab words of 1-3 subwords, as a sentence pair: [CLS] A [SEP] B [SEP]
WORD_IDS = np.array([-1] + [w for w in range(60) for _ in range(1 + w % 3)] + [-1]
                    + [w for w in range(60, 100) for _ in range(1 + w % 2)] + [-1])
IDS = np.arange(100, 100 + len(WORD_IDS))
CANDIDATES = np.flatnonzero(WORD_IDS >= 0)
SEGMENT = {w: 0 if w < 60 else 1 for w in range(100)}
EXAMPLES = 1000


def chosen_positions(masking, seed):
    _, labels = mask_tokens(IDS, WORD_IDS, np.random.default_rng(seed), 4, 1000, masking)
    return labels != IGNORE


@pytest.mark.parametrize("mode", ["token", "whole-word", "ngram", "span"])
@pytest.mark.parametrize("rate", [0.15, 0.3])
def test_share_of_masked_tokens_and_whole_words(mode, rate):
    masking = Masking(mode, rate)
    shares, split_words = [], 0
    for seed in range(EXAMPLES):
        chosen = chosen_positions(masking, seed)
        assert not chosen[WORD_IDS < 0].any()  # [CLS] and [SEP] are never predicted
        shares.append(chosen.sum() / len(CANDIDATES))
        split_words += sum(len(set(chosen[WORD_IDS == w])) > 1 for w in range(100))
    assert abs(np.mean(shares) - rate) < 0.01, np.mean(shares)
    if mode == "token":
        assert split_words > EXAMPLES  # tokens are chosen alone, so words get split
    else:
        assert split_words == 0  # never part of a word


def chosen_runs(masking, seed, word_ids=WORD_IDS, rate=0.15):
    candidates = np.flatnonzero(word_ids >= 0)
    target = max(1, round(len(candidates) * rate))
    return _choose_runs(candidates, *_words(candidates, word_ids), np.random.default_rng(seed), target, masking)


def run_words(run, word_ids=WORD_IDS):
    return sorted(set(word_ids[run].tolist()))


@pytest.mark.parametrize("masking,expected_mean", [(Masking("ngram"), 1 / (1 + 1 / 2 + 1 / 3) * 3),
                                                   (Masking("span"), 3.8),
                                                   (Masking("span", span_geo_prob=0.3, span_max_length=5), None)])
def test_unit_lengths_follow_their_distribution(masking, expected_mean):
    probabilities = masking.length_probabilities
    rng = np.random.default_rng(0)
    drawn = np.array([masking.draw_length(rng) for _ in range(20000)])
    for n, p in enumerate(probabilities, start=1):
        assert abs((drawn == n).mean() - p) < 0.01, (n, (drawn == n).mean(), p)
    if expected_mean is not None:  # 1/n over 1..3; SpanBERT's 3.8 words at p 0.2 clipped at 10
        assert abs(drawn.mean() - expected_mean) < 0.05
    assert drawn.max() == len(probabilities)
    # the runs chosen: consecutive whole words of one segment, none overlapping
    for seed in range(300):
        runs = chosen_runs(masking, seed)
        covered = np.concatenate(runs)
        assert len(covered) == len(set(covered.tolist()))
        for run in runs:
            words = run_words(run)
            assert words == list(range(words[0], words[-1] + 1)) and len({SEGMENT[w] for w in words}) == 1
            assert np.array_equal(run, np.flatnonzero(np.isin(WORD_IDS, words)))
    # their lengths, on a 450-token sequence, follow the drawn ones: shortened a little where a run
    # would pass the target (about one run of each example's ten) or the sequence's end
    long_words = np.array([-1] + [w for w in range(300) for _ in range(1 + w % 2)] + [-1])
    lengths = np.array([len(run_words(run, long_words)) for seed in range(300)
                        for run in chosen_runs(masking, seed, long_words)])
    for n, p in enumerate(probabilities, start=1):
        assert abs((lengths == n).mean() - p) < 0.06, (n, (lengths == n).mean(), p)
    mean = (probabilities * np.arange(1, len(probabilities) + 1)).sum()
    assert 0.85 * mean < lengths.mean() <= mean


@pytest.mark.parametrize("mode", ["ngram", "span"])
def test_ngram_and_span_units_are_replaced_as_a_whole(mode):
    """80% of the units become [MASK], 10% random tokens, 10% stay: all tokens of a unit alike."""
    kinds = []
    for seed in range(300):
        # random tokens are drawn below 100, the example's ids are 100 and above, [MASK] is 5000
        masked, labels = mask_tokens(IDS, WORD_IDS, np.random.default_rng(seed), 5000, 100, Masking(mode))
        for run in chosen_runs(Masking(mode), seed):  # the same draws: the runs mask_tokens chose
            assert (labels[run] == IDS[run]).all()
            states = {"mask" if m == 5000 else "kept" if m == i else "random" for m, i in zip(masked[run], IDS[run])}
            assert len(states) == 1, states
            kinds.append(states.pop())
    shares = {k: kinds.count(k) / len(kinds) for k in ("mask", "random", "kept")}
    assert abs(shares["mask"] - 0.8) < 0.03 and abs(shares["random"] - 0.1) < 0.03, shares


def test_masks_are_a_function_of_seed_epoch_and_example_alone():
    item = {"input_ids": IDS.tolist(), "word_ids": WORD_IDS.tolist(), "epoch": 2, "index": 17}
    other = dict(item, index=3)
    for mode in ("ngram", "span"):
        collator = MaskedLMCollator(mask_id=4, pad_id=0, vocab_size=1000, seed=5, masking=Masking(mode))
        alone, together = collator([item]), collator([other, item])
        assert (alone["labels"][0] == together["labels"][1]).all()
        assert (alone["input_ids"][0] == together["input_ids"][1]).all()
        next_epoch = collator([dict(item, epoch=3)])
        assert not (alone["labels"][0] == next_epoch["labels"][0]).all()


@pytest.mark.parametrize("mode", ["token", "whole-word"])
def test_batch_masking_equals_one_example_at_a_time(mode):
    """The collator masks token and whole-word batches with numpy over the whole batch: the same
    masks, bit for bit, as mask_tokens on each example with its own generator."""
    rng = np.random.default_rng(0)
    rows, keys = [], []
    for k in range(40):
        length = int(rng.integers(3, 90))
        words = np.repeat(np.arange(length), rng.integers(1, 4, length))[:length]
        words[0] = words[-1] = -1
        if k % 7 == 0:
            words[:] = -1  # nothing to mask
        rows.append((rng.integers(5, 900, length), words))
        keys.append((k % 3, 1000 + k))
    lengths = np.array([len(ids) for ids, _ in rows])
    masking = Masking(mode, 0.2)
    masked, labels = mask_batch(np.concatenate([ids for ids, _ in rows]), np.concatenate([w for _, w in rows]),
                                lengths, keys, 11, 4, 1000, masking)
    start = 0
    for (ids, words), (epoch, index), length in zip(rows, keys, lengths):
        one = mask_tokens(ids, words, example_rng(11, epoch, index), 4, 1000, masking)
        assert np.array_equal(one[0], masked[start:start + length]) and np.array_equal(one[1], labels[start:start + length])
        start += length


# counter draws (pretraining/data/masks.py): what every run begun since masks with

def counter_batch(masking, examples=EXAMPLES, seed=5, epoch=0, mask_id=5000, vocab_size=100):
    """EXAMPLES copies of the sentence pair, examples 0.. of one epoch: (masked, labels), one row each."""
    ids, words = np.tile(IDS, examples), np.tile(WORD_IDS, examples)
    masked, labels = mask_batch_counter(ids, words, np.full(examples, len(IDS)), np.full(examples, epoch),
                                        np.arange(examples), seed, mask_id, vocab_size, masking)
    return masked.reshape(examples, -1), labels.reshape(examples, -1)


@pytest.mark.parametrize("mode", ["token", "whole-word", "ngram", "span"])
@pytest.mark.parametrize("rate", [0.15, 0.3])
def test_counter_draws_mask_the_share_and_whole_words(mode, rate):
    masked, labels = counter_batch(Masking(mode, rate))
    chosen = labels != IGNORE
    assert not chosen[:, WORD_IDS < 0].any()
    assert (labels[chosen] == np.tile(IDS, (EXAMPLES, 1))[chosen]).all()
    shares = chosen.sum(axis=1) / len(CANDIDATES)
    assert abs(shares.mean() - rate) < 0.01 and shares.max() <= rate + 1e-9, shares.mean()
    split_words = sum(len(set(row[WORD_IDS == w])) > 1 for row in chosen for w in range(100))
    assert (split_words > EXAMPLES) if mode == "token" else split_words == 0
    # 80% [MASK], 10% a random token (below 100 here), 10% kept
    replaced = masked[chosen]
    assert abs((replaced == 5000).mean() - 0.8) < 0.02 and abs((replaced < 100).mean() - 0.1) < 0.02
    # no place is favoured: each candidate token is chosen at about the rate (whole units: per word size)
    for size in (1, 2, 3) if mode == "whole-word" else (None,):
        places = CANDIDATES if size is None else CANDIDATES[np.isin(WORD_IDS[CANDIDATES], [
            w for w in range(100) if (WORD_IDS == w).sum() == size])]
        frequency = chosen[:, places].mean(axis=0)
        assert frequency.max() - frequency.min() < 0.15, (size, frequency.min(), frequency.max())


@pytest.mark.parametrize("masking", [Masking("ngram"), Masking("span"), Masking("span", span_geo_prob=0.3, span_max_length=5)])
def test_counter_runs_follow_their_lengths_and_stay_in_a_segment(masking):
    """Each segment is cut into runs of whole words of the drawn lengths; a chosen run's tokens are
    all labelled and replaced alike ([MASK], random or kept)."""
    examples = 300
    masked, labels = counter_batch(masking, examples)
    rows = np.repeat(np.arange(examples), len(IDS))
    words = np.tile(WORD_IDS, examples)
    candidates = np.flatnonzero(words >= 0)
    word_first = np.flatnonzero(np.diff(words[candidates], prepend=-2) != 0)
    word_sizes = np.diff(word_first, append=len(candidates))
    keys = example_keys(5, np.zeros(examples), np.arange(examples))
    positions = np.tile(np.arange(len(IDS)), examples)
    starts = _segment_runs(rows[candidates[word_first]], word_first, word_sizes, candidates, keys, positions, masking)
    run_words = np.split(words[candidates[word_first]], starts[1:])
    interior = []
    for run in run_words:
        assert len({SEGMENT[w] for w in run}) == 1 and list(run) == list(range(run[0], run[0] + len(run)))
        if run[-1] not in (59, 99):  # runs cut short by their segment's end are not counted
            interior.append(len(run))
    interior = np.array(interior)
    for n, p in enumerate(masking.length_probabilities, start=1):
        assert abs((interior == n).mean() - p) < 0.02, (n, (interior == n).mean(), p)
    kinds = []
    flat_masked, flat_labels, flat_ids = masked.reshape(-1), labels.reshape(-1), np.tile(IDS, examples)
    for run in np.split(candidates, word_first[starts[1:]]):
        labelled = flat_labels[run] != IGNORE
        assert labelled.all() or not labelled.any()
        if labelled.any():
            states = {"mask" if m == 5000 else "kept" if m == i else "random" for m, i in zip(flat_masked[run], flat_ids[run])}
            assert len(states) == 1, states
            kinds.append(states.pop())
    assert abs(kinds.count("mask") / len(kinds) - 0.8) < 0.04 and abs(kinds.count("random") / len(kinds) - 0.1) < 0.04


@pytest.mark.parametrize("mode", ["token", "whole-word", "ngram", "span"])
def test_counter_masks_are_a_function_of_seed_epoch_and_example_alone(mode):
    """An example masks alike alone, among others or in another place of the batch; another epoch or
    seed masks it otherwise."""
    collator = MaskedLMCollator(mask_id=4, pad_id=0, vocab_size=1000, seed=5, masking=Masking(mode))
    item = {"input_ids": IDS, "word_ids": WORD_IDS, "epoch": 2, "index": 17}
    short = {"input_ids": IDS[:50], "word_ids": np.append(WORD_IDS[:49], -1), "epoch": 2, "index": 3}
    alone, together = collator([item]), collator([short, item, dict(item, index=9)])
    for name in ("input_ids", "labels"):
        assert torch.equal(alone[name][0], together[name][1])
        assert not torch.equal(together[name][1], together[name][2])
        assert not torch.equal(alone[name][0], collator([dict(item, epoch=3)])[name][0])
        other_seed = MaskedLMCollator(mask_id=4, pad_id=0, vocab_size=1000, seed=6, masking=Masking(mode))
        assert not torch.equal(alone[name][0], other_seed([item])[name][0])
