"""Example builders, one per objective, over documents of tokenized sentences.

A document is a list of sentences; a sentence is ``(ids, word_ids)`` where word_ids
number the MeCab words (unique within the chunk being built), so whole-word masking can
find every subword of a word later. Special tokens get word id -1. Masking is not done
here: collators mask at batch time. All randomness comes from the ``rng`` passed in.
"""

import numpy as np

NO_WORD = -1


def _concat(sentences):
    ids, wids = [], []
    for sentence_ids, sentence_wids in sentences:
        ids.extend(sentence_ids)
        wids.extend(sentence_wids)
    return ids, wids


def _truncate_pair(a, b, max_tokens, rng):
    """Google's truncate_seq_pair: trim the longer side, one token at a time from a random end.

    Computed in closed form: the longer side is cut down to the shorter, then the two lose
    tokens in turn (ties cut B first, as the original loop does); each side's cuts split
    between front and back by one fair coin per token.
    """
    excess = len(a[0]) + len(b[0]) - max_tokens
    if excess <= 0:
        return
    gap = abs(len(a[0]) - len(b[0]))
    first = min(excess, gap)
    rest = excess - first
    cut_a = (first if len(a[0]) > len(b[0]) else 0) + rest // 2
    cut_b = (first if len(a[0]) <= len(b[0]) else 0) + rest - rest // 2
    for pair, cut in ((a, cut_a), (b, cut_b)):
        if cut:
            front = bin(rng.getrandbits(cut)).count("1")  # coins that chose the front
            keep = len(pair[0]) - cut
            pair[0] = pair[0][front : front + keep]
            pair[1] = pair[1][front : front + keep]


def _pair_example(a, b, cls_id, sep_id):
    ids = [cls_id, *a[0], sep_id, *b[0], sep_id]
    wids = [NO_WORD, *a[1], NO_WORD, *b[1], NO_WORD]
    token_type_ids = [0] * (len(a[0]) + 2) + [1] * (len(b[0]) + 1)
    return ids, wids, token_type_ids


def sentence_pairs(documents, seq_length, cls_id, sep_id, rng, order_prediction=False, short_seq_prob=0.1):
    """BERT next-sentence pairs (Google's create_instances_from_document) or ALBERT order pairs.

    Yields dicts with input_ids, word_ids, token_type_ids and next_sentence_label
    (1 = B is a random sentence) or sentence_order_label (1 = A and B swapped).
    """
    max_tokens = seq_length - 3
    label_name = "sentence_order_label" if order_prediction else "next_sentence_label"
    for doc_index, document in enumerate(documents):
        target = max_tokens
        if rng.random() < short_seq_prob:
            target = rng.randint(2, max_tokens)
        chunk, chunk_length, i = [], 0, 0
        while i < len(document):
            chunk.append(document[i])
            chunk_length += len(document[i][0])
            if i == len(document) - 1 or chunk_length >= target:
                if order_prediction and len(chunk) == 1:
                    chunk = _split_sentence(chunk[0], rng)
                if len(chunk) >= 1 and chunk:
                    a_end = 1 if len(chunk) < 2 else rng.randint(1, len(chunk) - 1)
                    a = [list(x) for x in _concat(chunk[:a_end])]
                    label = 0
                    if order_prediction:
                        b = [list(x) for x in _concat(chunk[a_end:])]
                        if rng.random() < 0.5:
                            a, b, label = b, a, 1
                    elif len(chunk) == 1 or rng.random() < 0.5:
                        label = 1
                        b = _random_next(documents, doc_index, target - len(a[0]), rng)
                        i -= len(chunk) - a_end  # put the unused sentences back
                    else:
                        b = [list(x) for x in _concat(chunk[a_end:])]
                    _truncate_pair(a, b, max_tokens, rng)
                    if a[0] and b[0]:
                        ids, wids, types = _pair_example(a, b, cls_id, sep_id)
                        yield {"input_ids": ids, "word_ids": wids, "token_type_ids": types, label_name: label}
                chunk, chunk_length = [], 0
                if target < max_tokens:  # a new target for the next chunk, as Google's loop does per document
                    target = max_tokens
            i += 1


def _split_sentence(sentence, rng):
    """Cut one sentence in two at a word boundary (ALBERT needs two segments to swap)."""
    ids, wids = sentence
    cuts = [k for k in range(1, len(ids)) if wids[k] != wids[k - 1]]
    if not cuts:
        return []
    k = cuts[rng.randrange(len(cuts))]
    return [(ids[:k], wids[:k]), (ids[k:], wids[k:])]


def _random_next(documents, doc_index, target_length, rng):
    """Sentences from a random other document, at least ``target_length`` tokens if possible."""
    other = doc_index
    for _ in range(10):
        other = rng.randrange(len(documents))
        if other != doc_index:
            break
    document = documents[other]
    start = rng.randrange(len(document))
    ids, wids = [], []
    for sentence_ids, sentence_wids in document[start:]:
        ids.extend(sentence_ids)
        wids.extend(sentence_wids)
        if len(ids) >= target_length:
            break
    return [ids, wids]


def token_stream(documents, cls_id, sep_id):
    """Every document as [CLS] s1 [SEP] s2 [SEP] ..., concatenated: (ids, word_ids) arrays."""
    ids, wids = [], []
    for document in documents:
        ids.append(cls_id)
        wids.append(NO_WORD)
        for sentence_ids, sentence_wids in document:
            ids.extend(sentence_ids)
            wids.extend(sentence_wids)
            ids.append(sep_id)
            wids.append(NO_WORD)
    return np.asarray(ids, dtype=np.int32), np.asarray(wids, dtype=np.int32)


def packed_blocks(documents, block_length, cls_id, sep_id):
    """Consecutive blocks of exactly ``block_length`` tokens; only the final remainder is dropped."""
    ids, wids = token_stream(documents, cls_id, sep_id)
    for start in range(0, len(ids) - block_length + 1, block_length):
        yield {"input_ids": ids[start : start + block_length], "word_ids": wids[start : start + block_length]}


def span_lengths(inputs_length, noise_density=0.15, mean_noise_span_length=3.0):
    """(raw tokens per example, targets length) so span corruption yields exactly ``inputs_length``.

    As in T5's ``random_spans_helper``: inputs hold the kept tokens, one sentinel per noise
    span and EOS; targets hold one sentinel per span, the noise tokens and EOS.
    """

    def lengths(tokens_length):
        noise = int(round(tokens_length * noise_density))
        spans = int(round(noise / mean_noise_span_length))
        return tokens_length - noise + spans + 1, noise + spans + 1

    tokens_length = inputs_length
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    return tokens_length, lengths(tokens_length)[1]


def _random_segmentation(num_items, num_segments, rng):
    first = np.arange(num_items - 1) < (num_segments - 1)
    rng.shuffle(first)
    segment_id = np.cumsum(np.concatenate([[0], first]))
    return np.bincount(segment_id, minlength=num_segments)


def noise_mask(length, noise_density, mean_noise_span_length, rng):
    """T5's random_spans_noise_mask: boolean array, True where a token is corrupted."""
    num_noise = int(round(length * noise_density))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)
    keep_lengths = _random_segmentation(length - num_noise, num_spans, rng)
    interleaved = np.stack([keep_lengths, noise_lengths], axis=1).reshape(-1)
    starts = np.cumsum(interleaved)[:-1]
    indicator = np.zeros(length, dtype=np.int32)
    indicator[starts] = 1
    return (np.cumsum(indicator) % 2) == 1


def corrupt_spans(tokens, mask, sentinel_ids, eos_id):
    """Inputs with noise span k replaced by sentinel k; targets with kept span k replaced by it.

    As T5: the mask always starts with a kept span, so targets read s0 noise0 s1 noise1 ...
    """
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    keep_starts = ~mask & np.concatenate([[True], mask[:-1]])
    span_index = np.cumsum(starts) - 1
    sentinels = np.asarray(sentinel_ids, dtype=np.int32)
    inputs = np.where(starts, sentinels[np.clip(span_index, 0, None)], tokens)[~mask | starts]
    keep_index = np.cumsum(keep_starts) - 1
    targets = np.where(keep_starts, sentinels[np.clip(keep_index, 0, None)], tokens)[mask | keep_starts]
    return np.append(inputs, eos_id).astype(np.int32), np.append(targets, eos_id).astype(np.int32)


def span_corruption(documents, inputs_length, cls_id, sep_id, sentinel_ids, eos_id, rng_np,
                    noise_density=0.15, mean_noise_span_length=3.0):
    """T5 v1.1 span-corruption pairs with inputs of ``inputs_length`` tokens exactly."""
    raw_length, targets_length = span_lengths(inputs_length, noise_density, mean_noise_span_length)
    for block in packed_blocks(documents, raw_length, cls_id, sep_id):
        tokens = block["input_ids"]
        mask = noise_mask(raw_length, noise_density, mean_noise_span_length, rng_np)
        inputs, targets = corrupt_spans(tokens, mask, sentinel_ids, eos_id)
        assert len(inputs) == inputs_length and len(targets) == targets_length, (len(inputs), len(targets))
        yield {"input_ids": inputs, "labels": targets}
