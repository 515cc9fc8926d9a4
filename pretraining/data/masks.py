"""Counter-based masks: every draw is a hash of (seed, epoch, example, position, what for).

A whole batch is masked with a few numpy operations over all its tokens, in any masking mode:
no generator is made per example and no Python loop runs per example or per word. A mask is
still a function of (seed, epoch, example) alone, so it is the same on any rank, worker or
topology, and after a resume.

Runs begun before this scheme drew from one numpy Generator per example
(collators.py ``mask_tokens``); their checkpoints record no ``mask_draws`` and keep those draws.

The choice of units (a token, a MeCab word with its subwords, or a run of whole words) follows
BERT: units in a random order, taken while the count of tokens stays within the target (at least
one unit), then one more pass over the units left that still fit. For ngram and span masking each
segment is first cut into runs of whole words, a run's length drawn from the mode's distribution
at its first word (a run ends early at its segment's end); the runs are the units.
"""

import numpy as np

IGNORE = -100

# splitmix64's constants (Steele et al., "Fast splittable pseudorandom number generators", 2014)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1, _MIX_2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
# what a draw is for: each gets its own stream of hashes
ORDER, ACTION, RANDOM_TOKEN, LENGTH = range(4)


def _mix(x):
    """splitmix64's finalizer over a uint64 array (wrapping arithmetic): a bijection whose output
    bits each depend on every input bit."""
    x = (x ^ (x >> np.uint64(30))) * _MIX_1
    x = (x ^ (x >> np.uint64(27))) * _MIX_2
    return x ^ (x >> np.uint64(31))


def example_keys(seed, epochs, indices):
    """One 64-bit key per example, from (seed, epoch, example index)."""
    key = _mix(np.full(len(epochs), seed % 2 ** 64, dtype=np.uint64) * _GOLDEN + _GOLDEN)
    key = _mix(key ^ (np.asarray(epochs, dtype=np.uint64) * _MIX_1))
    return _mix(key ^ (np.asarray(indices, dtype=np.uint64) * _MIX_2))


def draws(keys, positions, stream):
    """A 64-bit draw for each (example key, position in the example) of ``stream``."""
    counter = (positions.astype(np.uint64) * np.uint64(4) + np.uint64(stream) + np.uint64(1)) * _GOLDEN
    return _mix(keys ^ counter)


def uniform(hashes):
    """Draws -> floats in [0, 1) (their top 53 bits)."""
    return (hashes >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _sums_within(values, rows, first_of_row):
    """Running sums of ``values`` restarting at each row (``rows`` sorted; ``first_of_row``: where
    each row's entries begin)."""
    running = np.cumsum(values)
    return running - (running - values)[first_of_row[rows]]


def choose_units(unit_rows, unit_sizes, order_draws, targets):
    """Which units each row masks: its units by ascending draw, the longest prefix within the row's
    target of tokens (at least the first), then those of the rest that fit what is left, in the same
    order, while they fit. ``unit_rows`` ascending. Returns a bool per unit."""
    count = len(unit_rows)
    if count == 0:
        return np.zeros(0, dtype=bool)
    # one sort by (row, draw): the row in the key's top bits, the draw's top bits below it
    row_bits = max(1, int(len(targets)).bit_length())
    order = np.argsort((unit_rows.astype(np.uint64) << np.uint64(64 - row_bits)) | (order_draws >> np.uint64(row_bits)))
    rows, sizes = unit_rows[order], unit_sizes[order]
    first_of_row = np.searchsorted(rows, np.arange(len(targets)))
    is_first = np.arange(count) == first_of_row[rows]
    target = targets[rows]
    taken = (_sums_within(sizes, rows, first_of_row) <= target) | is_first
    left = target - np.bincount(rows, weights=sizes * taken, minlength=len(targets)).astype(np.int64)[rows]
    fits = ~taken & (sizes <= left)
    taken |= fits & (_sums_within(sizes * fits, rows, first_of_row) <= left)
    chosen = np.empty(count, dtype=bool)
    chosen[order] = taken
    return chosen


def _segment_runs(word_rows, word_first, word_sizes, candidates, keys, positions, masking):
    """ngram and span: each segment's words cut into runs; returns the word numbers that start a run.

    A segment is a stretch of a row's words whose tokens follow each other (a [SEP] or the row's end
    closes it). From its first word, a run of n words (drawn at that word) is laid, and the next run
    starts after it."""
    words = len(word_rows)
    last = candidates[word_first + word_sizes - 1]
    closes = np.ones(words, dtype=bool)  # the last word of its segment
    closes[:-1] = (candidates[word_first[1:]] != last[:-1] + 1) | (word_rows[1:] != word_rows[:-1])
    segment_end = np.flatnonzero(closes) + 1
    segment_end_of = segment_end[np.searchsorted(segment_end, np.arange(words), side="right")]
    first_position = positions[candidates[word_first]]
    cumulative = masking.length_probabilities.cumsum()
    lengths = 1 + np.searchsorted(cumulative / cumulative[-1],
                                  uniform(draws(keys[word_rows], first_position, LENGTH)), side="right")
    following = np.arange(words) + lengths  # where the next run starts, if the segment goes on
    starts = np.zeros(words, dtype=bool)
    current = np.concatenate([[0], segment_end[:-1]])  # each segment's first word
    while len(current):  # one step a run: as many steps as the longest segment has runs
        starts[current] = True
        following_start = following[current]
        current = following_start[following_start < segment_end_of[current]]
    return np.flatnonzero(starts)


def mask_batch_counter(ids, word_ids, lengths, epochs, indices, seed, mask_id, vocab_size, masking):
    """The rows of a batch laid end to end (``lengths`` tokens each; word id -1 for tokens never
    predicted) -> (masked ids, labels), flat. Of the chosen tokens 80% become [MASK], 10% a random
    token, 10% stay; for ngram and span a run's tokens all share one choice, as in SpanBERT."""
    rows_count = len(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    rows = np.repeat(np.arange(rows_count), lengths)
    positions = np.arange(len(ids)) - offsets[rows]
    keys = example_keys(seed, epochs, indices)
    labels = np.full(len(ids), IGNORE, dtype=np.int64)
    masked = ids.copy()
    candidates = np.flatnonzero(word_ids >= 0)
    if len(candidates) == 0:
        return masked, labels
    candidate_rows = rows[candidates]
    per_row = np.bincount(candidate_rows, minlength=rows_count)
    targets = np.maximum(1, np.round(per_row * masking.rate)).astype(np.int64)

    # units, as (first candidate, number of candidates): tokens, words, or runs of words
    if masking.mode == "token":
        unit_first = np.arange(len(candidates))
    else:
        new_word = np.ones(len(candidates), dtype=bool)
        new_word[1:] = (word_ids[candidates[1:]] != word_ids[candidates[:-1]]) | (candidate_rows[1:] != candidate_rows[:-1])
        unit_first = np.flatnonzero(new_word)
        if masking.mode in ("ngram", "span"):
            word_sizes = np.diff(unit_first, append=len(candidates))
            unit_first = unit_first[_segment_runs(candidate_rows[unit_first], unit_first, word_sizes, candidates, keys,
                                                  positions, masking)]
    unit_sizes = np.diff(unit_first, append=len(candidates))
    unit_rows = candidate_rows[unit_first]
    unit_positions = positions[candidates[unit_first]]
    chosen = choose_units(unit_rows, unit_sizes, draws(keys[unit_rows], unit_positions, ORDER), targets)

    sizes = unit_sizes[chosen]
    picked = candidates[np.repeat(unit_first[chosen] - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())]
    picked_keys = keys[rows[picked]]
    if masking.mode in ("ngram", "span"):  # one choice a run, drawn at its first token
        action = np.repeat(uniform(draws(keys[unit_rows[chosen]], unit_positions[chosen], ACTION)), sizes)
    else:
        action = uniform(draws(picked_keys, positions[picked], ACTION))
    labels[picked] = ids[picked]
    masked[picked[action < 0.8]] = mask_id
    randomized = (action >= 0.8) & (action < 0.9)
    random_ids = draws(picked_keys[randomized], positions[picked[randomized]], RANDOM_TOKEN) % np.uint64(vocab_size)
    masked[picked[randomized]] = random_ids.astype(np.int64)
    return masked, labels
