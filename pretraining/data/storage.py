"""How examples are stored on disk: compact columns, expanded back to what the collators read.

The builders (pretraining/data/builders.py) give ``input_ids``, ``word_ids`` (the MeCab word of each
token, -1 for [CLS]/[SEP]) and, for sentence pairs, ``token_type_ids``. Stored as int32 lists
that is 8-9 bytes a token; a 100 GB corpus would need 200 GB of examples. Stored instead:

- ids as uint16 when every id (T5's sentinels included) is below 65536, else int32;
- ``word_starts`` and ``specials``, two bit-packed boolean lists: a token starts a new word
  (it differs from the word of the last non-special token before it in the example), a token is
  [CLS]/[SEP]. Whole-word masking only needs where each word's run of tokens starts;
- ``segment_b_start``, one number a pair: token_type_ids are 0 before it and 1 from it.

``expand`` turns stored rows back into ``word_ids`` (numbered from 0 in each example) and
``token_type_ids``; the collators see the same runs of words, so the batches are bit for bit
those of the int32 columns. Folders built before (with int32 columns) are read as they are.
"""

import numpy as np
import pyarrow as pa

from .builders import ListColumn

UINT16_IDS = 1 << 16  # ids below this fit in uint16


def id_type(largest_id):
    return pa.uint16() if largest_id < UINT16_IDS else pa.int32()


def schema(kind, ids):
    """The stored columns of an example kind, with ``ids`` the Arrow type of token ids."""
    words = [("word_starts", pa.list_(pa.bool_())), ("specials", pa.list_(pa.bool_()))]
    pair = [("input_ids", pa.list_(ids)), *words, ("segment_b_start", pa.int32())]
    return {
        "nsp": pa.schema([*pair, ("next_sentence_label", pa.int8())]),
        "sop": pa.schema([*pair, ("sentence_order_label", pa.int8())]),
        "packed": pa.schema([("input_ids", pa.list_(ids)), *words]),
        "span": pa.schema([("input_ids", pa.list_(ids)), ("labels", pa.list_(ids))]),
    }[kind]


def compact(columns):
    """The builders' columns -> the stored ones (word_ids and token_type_ids replaced)."""
    columns = dict(columns)
    if "word_ids" in columns:
        word_ids = columns.pop("word_ids")
        columns["word_starts"], columns["specials"] = _word_flags(word_ids)
    if "token_type_ids" in columns:
        types = columns.pop("token_type_ids")
        # segment A is [CLS] A [SEP]: the count of its zeros is where segment B starts
        columns["segment_b_start"] = np.add.reduceat(types.values == 0, types.offsets[:-1]).astype(np.int32) \
            if len(types) else np.zeros(0, np.int32)
    return columns


def _word_flags(word_ids):
    values, offsets = word_ids.values, word_ids.offsets
    specials = values < 0
    words = np.flatnonzero(~specials)
    row = np.searchsorted(offsets, words, side="right") - 1
    starts = np.zeros(len(values), dtype=bool)
    if len(words):
        new = np.ones(len(words), dtype=bool)
        new[1:] = (values[words[1:]] != values[words[:-1]]) | (row[1:] != row[:-1])
        starts[words] = new
    return ListColumn(starts, offsets), ListColumn(specials, offsets)


def word_ids_of(word_starts, specials):
    """One example's word ids from its stored flags: -1 for specials, else the run's number."""
    starts, specials = np.asarray(word_starts, dtype=bool), np.asarray(specials, dtype=bool)
    return np.where(specials, -1, np.cumsum(starts) - 1).tolist()


def expand(batch):
    """A batch of stored rows (dict of lists, as ``datasets`` formats them) -> the builders' columns."""
    if "word_starts" in batch:
        batch["word_ids"] = [word_ids_of(s, p) for s, p in zip(batch.pop("word_starts"), batch.pop("specials"))]
    if "segment_b_start" in batch:
        batch["token_type_ids"] = [[0] * b + [1] * (len(ids) - b)
                                   for b, ids in zip(batch.pop("segment_b_start"), batch["input_ids"])]
    return batch


def _flat(column):
    """An Arrow list column -> (its values as numpy, offsets from 0)."""
    import pyarrow.compute as pc

    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return column.flatten().to_numpy(zero_copy_only=False), offsets


def expand_table(table):
    """Stored rows as an Arrow table -> the builders' rows, as ``expand`` gives them but with numpy
    arrays (int64) for lists: no per-token Python objects between the file and the collator."""
    ids, offsets = _flat(table.column("input_ids"))
    columns = {"input_ids": ids.astype(np.int64)}
    lengths = np.diff(offsets)
    if "word_starts" in table.column_names:
        starts, _ = _flat(table.column("word_starts"))
        specials, _ = _flat(table.column("specials"))
        words = np.cumsum(starts)  # numbered from 0 in each example: less the count before the row
        before = np.concatenate([[0], words])[offsets[:-1]]
        columns["word_ids"] = np.where(specials, -1, words - np.repeat(before, lengths) - 1)
    if "segment_b_start" in table.column_names:
        place = np.arange(len(ids)) - np.repeat(offsets[:-1], lengths)
        segment_b = table.column("segment_b_start").to_numpy().astype(np.int64)
        columns["token_type_ids"] = (place >= np.repeat(segment_b, lengths)).astype(np.int64)
    rows = [{name: values[offsets[k]:offsets[k + 1]] for name, values in columns.items()} for k in range(len(lengths))]
    for name in table.column_names:
        if name in ("input_ids", "word_starts", "specials", "segment_b_start"):
            continue
        column = table.column(name)
        if pa.types.is_list(column.type):  # T5's labels; word_ids and token_type_ids of older folders
            values, list_offsets = _flat(column)
            values = values.astype(np.int64)
            for k, row in enumerate(rows):
                row[name] = values[list_offsets[k]:list_offsets[k + 1]]
        else:  # one number a row (next_sentence_label, sentence_order_label)
            for row, value in zip(rows, column.to_pylist()):
                row[name] = value
    return rows
