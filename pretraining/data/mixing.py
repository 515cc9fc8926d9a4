"""Corpus mixing: several corpora, each taking the share of the examples its weight gives it.

    --input_file wiki.parquet:1.0 cc100.xz:0.3

Each weighted input is a source with its own examples folder (cached on its own, so a new
weight rebuilds nothing). The mix lists the folders and weights in ``mixture.json``. Source s
makes up w_s / sum(w) of the mix, as in Megatron's and PaddleNLP's blended datasets: a mix
epoch holds as many examples as the sources together, and source s fills round(total * share)
of them; a source whose share exceeds its size repeats its examples evenly, a smaller share
takes evenly spaced ones. The mix is a pure function of the folders and weights, so the
per-step sampler and resuming work on it as on one folder. Held-out examples are all the
sources' held-out examples, unweighted.
"""

import json
import math
import os

import numpy as np

from ja_common.errors import UserError

MIXTURE_FILE = "mixture.json"


def parse_weighted_inputs(items):
    """--input_file items -> [(item, weight or None)]; ``path:weight`` gives a weight."""
    parsed = []
    for item in items:
        path, colon, weight = item.rpartition(":")
        if not colon or not path or os.path.exists(item):
            parsed.append((item, None))
            continue
        try:
            value = float(weight)
        except ValueError:
            parsed.append((item, None))
            continue
        if not math.isfinite(value) or value <= 0:
            raise UserError(f"--input_file {item}: a weight must be a positive number, not {weight}")
        parsed.append((path, value))
    return parsed


def sources(items):
    """[(inputs, weight)]: one source of every item when any has a weight (1.0 where none is
    given), else a single unweighted source of all the items."""
    parsed = parse_weighted_inputs(items)
    if all(weight is None for _, weight in parsed):
        return [([item for item, _ in parsed], None)]
    return [([item], 1.0 if weight is None else weight) for item, weight in parsed]


def is_mixture(folder):
    return os.path.isfile(os.path.join(folder, MIXTURE_FILE))


def write_mixture(folder, parts):
    """``parts``: [(examples folder, weight, inputs)]; written whole, then renamed into place."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, MIXTURE_FILE)
    with open(path + ".partial", "w", encoding="utf-8") as f:
        json.dump({"sources": [{"examples": os.path.abspath(d), "weight": w, "inputs": i} for d, w, i in parts]},
                  f, indent=2)
    os.replace(path + ".partial", path)


def read_mixture(folder):
    with open(os.path.join(folder, MIXTURE_FILE), encoding="utf-8") as f:
        return json.load(f)["sources"]


class MixedExamples:
    """Datasets of the same kind read as one, each source taking its weight's share (None: its size).

    Indexed like a ``datasets.Dataset``: an int gives a row, a list of ints a dict of columns.
    """

    def __init__(self, datasets, weights=None):
        self.datasets = datasets
        self.sizes = np.array([len(d) for d in datasets], dtype=np.int64)
        total = int(self.sizes.sum())
        if weights is None:
            self.counts = self.sizes
        else:
            shares = np.asarray(weights, dtype=np.float64) / sum(weights)
            self.counts = np.maximum(1, np.round(total * shares)).astype(np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])

    def __len__(self):
        return int(self.starts[-1])

    def locate(self, index):
        """(source, row) of a mix index: the j-th of source s's places is its row j * size // count."""
        source = int(np.searchsorted(self.starts, index, side="right") - 1)
        j = index - int(self.starts[source])
        return source, j * int(self.sizes[source]) // int(self.counts[source])

    def __getitem__(self, key):
        if not isinstance(key, (list, tuple)):
            source, row = self.locate(int(key))
            return self.datasets[source][row]
        located = [self.locate(int(k)) for k in key]
        rows = {}
        for source in {s for s, _ in located}:
            batch = self.datasets[source][[row for s, row in located if s == source]]
            rows[source] = iter([dict(zip(batch, values)) for values in zip(*batch.values())])
        ordered = [next(rows[source]) for source, _ in located]
        return {name: [row[name] for row in ordered] for name in ordered[0]} if ordered else {}
