"""Numpy helpers shared by the tokenizer's encoder and the example builders."""

import numpy as np


def ranges_index(starts, lengths):
    """Indices of the ranges [start, start + length), concatenated (an int64 array)."""
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)
