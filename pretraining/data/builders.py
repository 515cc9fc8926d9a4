"""Example builders, one per objective, over a tokenized chunk of the corpus.

A ``TokenizedText`` holds a chunk's subword ids in one flat array, with the MeCab word
each id came from (numbered through the chunk, so whole-word masking can find every
subword of a word later) and the offsets of its sentences and documents. Builders decide
examples as token ranges and gather them with numpy: the per-token work never runs in
Python. Special tokens get word id -1. Masking is not done here: collators mask at batch
time. All randomness comes from the generator passed in.

Each builder returns columns: a list column is a ``ListColumn`` (flat values and offsets,
as Arrow stores it), any other column a numpy array. The packed builders work on a token
stream (``token_stream``) and also return the tokens after their last whole block, which
the caller carries into the next blocks (``join_streams``).
"""

import bisect
from dataclasses import dataclass

import numpy as np

from ja_common.arrays import ranges_index

NO_WORD = -1


@dataclass
class TokenizedText:
    ids: np.ndarray  # int32, every subword of the chunk
    word_ids: np.ndarray  # int32, the MeCab word of each subword
    sentence_starts: np.ndarray  # int64, token offset of each sentence, and the end
    document_starts: np.ndarray  # int64, first sentence of each document, and the end

    def with_specials(self, *ids):
        """(ids, word_ids) with the given special ids appended at index len(self.ids), len + 1, ..."""
        return (np.concatenate([self.ids, np.asarray(ids, dtype=np.int32)]),
                np.concatenate([self.word_ids, np.full(len(ids), NO_WORD, dtype=np.int32)]))


@dataclass
class ListColumn:
    values: np.ndarray
    offsets: np.ndarray  # int64, len(rows) + 1

    @classmethod
    def fixed(cls, values, row_length):
        rows = len(values) // row_length
        return cls(values[: rows * row_length], np.arange(rows + 1, dtype=np.int64) * row_length)

    def __len__(self):
        return len(self.offsets) - 1


def _lengths_to_offsets(lengths):
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])


# ---- BERT next-sentence and ALBERT sentence-order pairs ----

def _truncate_pair(a, b, max_tokens, rng):
    """Google's truncate_seq_pair on [start, length] ranges: trim the longer side, one token
    at a time from a random end.

    Computed in closed form: the longer side is cut down to the shorter, then the two lose
    tokens in turn (ties cut B first, as the original loop does); each side's cuts split
    between front and back by one fair coin per token.
    """
    excess = a[1] + b[1] - max_tokens
    if excess <= 0:
        return
    first = min(excess, abs(a[1] - b[1]))
    rest = excess - first
    cut_a = (first if a[1] > b[1] else 0) + rest // 2
    cut_b = (first if a[1] <= b[1] else 0) + rest - rest // 2
    for side, cut in ((a, cut_a), (b, cut_b)):
        if cut:
            side[0] += bin(rng.getrandbits(cut)).count("1")  # coins that chose the front
            side[1] -= cut


def _split_sentence(text, start, end, rng):
    """Cut one sentence in two at a word boundary (ALBERT needs two segments to swap)."""
    cuts = np.flatnonzero(np.diff(text.word_ids[start:end])) + 1
    if not len(cuts):
        return None
    return [start, start + int(cuts[rng.randrange(len(cuts))]), end]


def _random_next(sentence_starts, document_starts, doc_index, target_length, rng):
    """[start, length] of sentences from a random other document, at least ``target_length``
    tokens if the document has them."""
    other = doc_index
    for _ in range(10):
        other = rng.randrange(len(document_starts) - 1)
        if other != doc_index:
            break
    first, last = document_starts[other], document_starts[other + 1]
    start = first + rng.randrange(last - first)
    end = bisect.bisect_left(sentence_starts, sentence_starts[start] + target_length, start + 1, last)
    return [sentence_starts[start], sentence_starts[end] - sentence_starts[start]]


def cut_long_sentences(text, longest):
    """Sentences of more than ``longest`` tokens cut into pieces of at most ``longest``, at word starts.

    Google's recipe truncates a pair to the sequence length, so a line of a million tokens
    (a corpus without sentence breaks) would give one example; cut into pieces, all of it is used.
    """
    starts = text.sentence_starts
    long_sentences = np.flatnonzero(np.diff(starts) > longest)
    if not len(long_sentences):
        return text
    cuts, cuts_per_sentence = [], np.zeros(len(starts) - 1, dtype=np.int64)
    for k in long_sentences.tolist():  # rare: a Python loop over the long sentences only
        start, end = int(starts[k]), int(starts[k + 1])
        words = text.word_ids[start:end]
        word_starts = (start + np.flatnonzero(np.diff(words, prepend=words[0] - 1))).tolist()
        position = start
        while end - position > longest:
            at = word_starts[bisect.bisect_right(word_starts, position + longest) - 1]
            position = at if at > position else position + longest  # a word longer than a piece is cut inside
            cuts.append(position)
            cuts_per_sentence[k] += 1
    shift = np.concatenate([[0], np.cumsum(cuts_per_sentence)])  # cuts before each original sentence
    return TokenizedText(ids=text.ids, word_ids=text.word_ids,
                         sentence_starts=np.sort(np.concatenate([starts, np.asarray(cuts, dtype=np.int64)])),
                         document_starts=text.document_starts + shift[text.document_starts])


def covered_tokens(text, pairs):
    """How many of the text's tokens appear in at least one pair (a_start, a_length, b_start, b_length)."""
    covered = np.zeros(len(text.ids), dtype=bool)
    covered[ranges_index(pairs[:, [0, 2]].ravel(), pairs[:, [1, 3]].ravel())] = True
    return int(covered.sum())


def pair_columns(text, pairs, cls_id, sep_id, order_prediction):
    """Columns input_ids, word_ids, token_type_ids and next_sentence_label (1 = B is a random
    sentence) or sentence_order_label (1 = A and B swapped) of the pairs from pair_ranges."""
    label_name = "sentence_order_label" if order_prediction else "next_sentence_label"
    return {**_pair_columns(text, pairs[:, :4], cls_id, sep_id), label_name: pairs[:, 4].astype(np.int8)}


def pair_ranges(text, seq_length, rng, order_prediction=False, short_seq_prob=0.1):
    """BERT next-sentence pairs (Google's create_instances_from_document) or ALBERT order pairs, as
    rows of (a_start, a_length, b_start, b_length, label). ``rng`` is a ``random.Random``."""
    max_tokens = seq_length - 3
    starts = text.sentence_starts.tolist()
    documents = text.document_starts.tolist()
    pairs = []  # a_start, a_length, b_start, b_length, label
    for doc_index in range(len(documents) - 1):
        first, end = documents[doc_index], documents[doc_index + 1]
        target = max_tokens
        if rng.random() < short_seq_prob:
            target = rng.randint(2, max_tokens)
        chunk_first = first
        while chunk_first < end:
            # the chunk: sentences chunk_first..last, until the target length or the document's end
            last = bisect.bisect_left(starts, starts[chunk_first] + target, chunk_first + 1, end) - 1
            bounds = starts[chunk_first : last + 2]  # token offsets of the chunk's pieces
            if order_prediction and len(bounds) == 2:
                bounds = _split_sentence(text, bounds[0], bounds[1], rng)
            if bounds:
                pieces = len(bounds) - 1
                a_end = 1 if pieces < 2 else rng.randint(1, pieces - 1)
                a = [bounds[0], bounds[a_end] - bounds[0]]
                label = 0
                if order_prediction:
                    b = [bounds[a_end], bounds[-1] - bounds[a_end]]
                    if rng.random() < 0.5:
                        a, b, label = b, a, 1
                elif pieces == 1 or rng.random() < 0.5:
                    label = 1
                    b = _random_next(starts, documents, doc_index, target - a[1], rng)
                    last -= pieces - a_end  # put the unused sentences back
                else:
                    b = [bounds[a_end], bounds[-1] - bounds[a_end]]
                _truncate_pair(a, b, max_tokens, rng)
                if a[1] and b[1]:
                    pairs.append((*a, *b, label))
            chunk_first = last + 1
            target = max_tokens  # a short target holds for one chunk only, as in Google's loop
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 5)


def _pair_columns(text, ranges, cls_id, sep_id):
    """[CLS] A [SEP] B [SEP] for each row of (a_start, a_length, b_start, b_length)."""
    ids, word_ids = text.with_specials(cls_id, sep_id)
    cls_at, sep_at = len(text.ids), len(text.ids) + 1
    rows = len(ranges)
    ones = np.ones(rows, dtype=np.int64)
    segment_starts = np.stack([cls_at * ones, ranges[:, 0], sep_at * ones, ranges[:, 2], sep_at * ones], axis=1)
    segment_lengths = np.stack([ones, ranges[:, 1], ones, ranges[:, 3], ones], axis=1)
    index = ranges_index(segment_starts.ravel(), segment_lengths.ravel())
    offsets = _lengths_to_offsets(segment_lengths.sum(axis=1))
    types = np.repeat(np.tile(np.array([0, 0, 0, 1, 1], dtype=np.int8), rows), segment_lengths.ravel())
    return {
        "input_ids": ListColumn(ids[index], offsets),
        "word_ids": ListColumn(word_ids[index], offsets),
        "token_type_ids": ListColumn(types, offsets),
    }


# ---- packed blocks (MLM without NSP, causal and bidirectional LMs, T5's raw text) ----

def token_stream(text, cls_id, sep_id):
    """Every document as [CLS] s1 [SEP] s2 [SEP] ..., concatenated: (ids, word_ids) arrays."""
    ids, word_ids = text.with_specials(cls_id, sep_id)
    sentences = len(text.sentence_starts) - 1
    # per sentence two segments, its tokens then [SEP]; a [CLS] segment before each document
    starts = np.stack([text.sentence_starts[:-1], np.full(sentences, len(text.ids) + 1)], axis=1).ravel()
    lengths = np.stack([np.diff(text.sentence_starts), np.ones(sentences, dtype=np.int64)], axis=1).ravel()
    document_at = 2 * text.document_starts[:-1]
    starts = np.insert(starts, document_at, len(text.ids))
    lengths = np.insert(lengths, document_at, 1)
    index = ranges_index(starts, lengths)
    return ids[index], word_ids[index]


def packed_blocks(stream, block_length):
    """Consecutive blocks of exactly ``block_length`` tokens of a token stream (ids, word_ids).

    Returns the columns and the tokens left over after the last whole block.
    """
    ids, word_ids = stream
    whole = len(ids) // block_length * block_length
    columns = {"input_ids": ListColumn.fixed(ids[:whole], block_length),
               "word_ids": ListColumn.fixed(word_ids[:whole], block_length)}
    return columns, (ids[whole:], word_ids[whole:])


def join_streams(streams):
    """Token streams one after the other, word ids renumbered so that words stay distinct."""
    ids, word_ids, next_word = [], [], 0
    for stream_ids, stream_word_ids in streams:
        words = stream_word_ids >= 0
        first = stream_word_ids[words].min() if words.any() else 0
        ids.append(stream_ids)
        word_ids.append(np.where(words, stream_word_ids - first + next_word, NO_WORD).astype(np.int32))
        next_word += int(stream_word_ids[words].max() - first + 1) if words.any() else 0
    if not ids:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32)
    return np.concatenate(ids), np.concatenate(word_ids)


# ---- T5 span corruption ----

def noise_counts(tokens_length, noise_density=0.15, mean_noise_span_length=3.0):
    """(noise tokens, noise spans) among ``tokens_length`` raw tokens, rounded as T5 does."""
    noise = int(round(tokens_length * noise_density))
    return noise, int(round(noise / mean_noise_span_length))


def span_lengths(inputs_length, noise_density=0.15, mean_noise_span_length=3.0):
    """(raw tokens per example, targets length) so span corruption yields exactly ``inputs_length``.

    As in T5's ``random_spans_helper``: inputs hold the kept tokens, one sentinel per noise
    span and EOS; targets hold one sentinel per span, the noise tokens and EOS.
    """

    def lengths(tokens_length):
        noise, spans = noise_counts(tokens_length, noise_density, mean_noise_span_length)
        return tokens_length - noise + spans + 1, noise + spans + 1

    tokens_length = inputs_length
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    return tokens_length, lengths(tokens_length)[1]


def _random_segmentation(rows, num_items, num_segments, rng):
    """Per row, ``num_items`` split into ``num_segments`` non-empty runs at random: their lengths."""
    starts_new = np.zeros((rows, num_items - 1), dtype=bool)
    starts_new[:, : num_segments - 1] = True
    starts_new = rng.permuted(starts_new, axis=1)
    cuts = np.nonzero(starts_new)[1].reshape(rows, num_segments - 1) + 1
    bounds = np.concatenate([np.zeros((rows, 1), dtype=np.int64), cuts, np.full((rows, 1), num_items)], axis=1)
    return np.diff(bounds, axis=1)


def noise_mask(rows, length, noise_density, mean_noise_span_length, rng):
    """T5's random_spans_noise_mask for ``rows`` sequences: bool (rows, length), True = corrupted."""
    num_noise = int(round(length * noise_density))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    noise_lengths = _random_segmentation(rows, num_noise, num_spans, rng)
    keep_lengths = _random_segmentation(rows, length - num_noise, num_spans, rng)
    interleaved = np.stack([keep_lengths, noise_lengths], axis=2).reshape(rows, -1)
    span_starts = np.cumsum(interleaved, axis=1)[:, :-1]
    indicator = np.zeros((rows, length), dtype=np.int32)
    np.put_along_axis(indicator, span_starts, 1, axis=1)
    return (np.cumsum(indicator, axis=1) % 2) == 1


def corrupt_spans(tokens, mask, sentinel_ids, eos_id):
    """Inputs with noise span k replaced by sentinel k; targets with kept span k replaced by it.

    ``tokens`` and ``mask`` are (rows, length); every row has the same number of spans (T5's
    mask always starts with a kept span, so targets read s0 noise0 s1 noise1 ...).
    """
    rows = len(tokens)
    previous = np.concatenate([np.zeros((rows, 1), dtype=bool), mask[:, :-1]], axis=1)
    noise_starts = mask & ~previous
    keep_starts = ~mask & np.concatenate([np.ones((rows, 1), dtype=bool), mask[:, :-1]], axis=1)
    sentinels = np.asarray(sentinel_ids, dtype=np.int32)
    eos = np.full((rows, 1), eos_id, dtype=np.int32)

    def replace(starts, keep):
        span_index = np.clip(np.cumsum(starts, axis=1) - 1, 0, None)
        values = np.where(starts, sentinels[span_index], tokens)[keep]
        return np.concatenate([values.reshape(rows, -1), eos], axis=1).astype(np.int32)

    return replace(noise_starts, ~mask | noise_starts), replace(keep_starts, mask | keep_starts)


def span_corruption(stream, inputs_length, sentinel_ids, eos_id, rng_np, noise_density=0.15,
                    mean_noise_span_length=3.0):
    """T5 v1.1 span-corruption pairs, inputs of ``inputs_length`` tokens exactly, from a token stream.

    ``rng_np`` is a ``numpy.random.Generator``. Returns the columns and the tokens left over.
    """
    raw_length, targets_length = span_lengths(inputs_length, noise_density, mean_noise_span_length)
    blocks, rest = packed_blocks(stream, raw_length)
    tokens = blocks["input_ids"].values.reshape(len(blocks["input_ids"]), raw_length)
    if len(tokens):
        mask = noise_mask(len(tokens), raw_length, noise_density, mean_noise_span_length, rng_np)
        inputs, targets = corrupt_spans(tokens, mask, sentinel_ids, eos_id)
    else:
        inputs, targets = np.zeros((0, inputs_length), np.int32), np.zeros((0, targets_length), np.int32)
    assert inputs.shape[1] == inputs_length and targets.shape[1] == targets_length, (inputs.shape, targets.shape)
    columns = {"input_ids": ListColumn.fixed(inputs.ravel(), inputs_length),
               "labels": ListColumn.fixed(targets.ravel(), targets_length)}
    return columns, rest
