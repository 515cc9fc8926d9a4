"""Batch collation and dynamic masking.

Masks are drawn at batch time from a generator seeded by (seed, epoch, example index),
so an example gets the same masks whatever the rank, worker or number of processes
that sees it: runs are reproducible and resumable on any topology.
"""

import numpy as np
import torch

IGNORE = -100


def example_rng(seed, epoch, index):
    return np.random.default_rng([seed, epoch, index])


def mask_tokens(ids, word_ids, rng, mask_id, vocab_size, mask_prob=0.15, whole_word=False):
    """BERT masking of one example: returns (masked ids, labels).

    About ``mask_prob`` of the tokens are predicted (at least one); of those 80% become
    [MASK], 10% a random token and 10% stay. With ``whole_word`` the units chosen are MeCab
    words, and every subword of a chosen word is predicted.
    """
    ids = np.asarray(ids, dtype=np.int64)
    word_ids = np.asarray(word_ids, dtype=np.int64)
    candidates = np.flatnonzero(word_ids >= 0)
    labels = np.full(ids.shape, IGNORE, dtype=np.int64)
    if len(candidates) == 0:
        return ids, labels
    target = max(1, int(round(len(candidates) * mask_prob)))
    if whole_word:
        # units: runs of equal word id (the subwords of one MeCab word)
        starts = np.flatnonzero(np.diff(word_ids[candidates], prepend=-2) != 0)
        units = np.split(candidates, starts[1:])
    else:
        units = [candidates[k : k + 1] for k in range(len(candidates))]
    chosen, count = [], 0
    for k in rng.permutation(len(units)):
        if count >= target:
            break
        if count + len(units[k]) > target and count > 0:
            continue
        chosen.append(units[k])
        count += len(units[k])
    positions = np.concatenate(chosen)
    labels[positions] = ids[positions]
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

    def __init__(self, mask_id, pad_id, vocab_size, seed, mask_prob=0.15, whole_word=False):
        self.mask_id, self.pad_id, self.vocab_size = mask_id, pad_id, vocab_size
        self.seed, self.mask_prob, self.whole_word = seed, mask_prob, whole_word

    def __call__(self, items):
        masked, labels = [], []
        for item in items:
            rng = example_rng(self.seed, item["epoch"], item["index"])
            ids, lab = mask_tokens(item["input_ids"], item["word_ids"], rng, self.mask_id, self.vocab_size,
                                   self.mask_prob, self.whole_word)
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
