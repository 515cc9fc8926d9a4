"""Which examples each rank trains on at each step.

Examples are read in epoch permutations (seeded by seed and epoch) laid end to end; the
global batch of micro-step s is the run of ``global_batch`` examples starting at
s * global_batch, and each rank takes its own slice of it. Ranks may have different batch
sizes (nodes of different sizes); together they cover every global batch exactly once,
nothing skipped or repeated within an epoch. The position is a pure function of the
step, so resuming needs only the step number: no data loader is replayed.
"""

import numpy as np

from .storage import expand_table


class GlobalBatchSampler:
    def __init__(self, num_examples, rank_batch_sizes, rank, seed, start_step=0):
        self.num_examples = num_examples
        self.global_batch = sum(rank_batch_sizes)
        self.offset = sum(rank_batch_sizes[:rank])
        self.size = rank_batch_sizes[rank]
        self.seed = seed
        self.step = start_step
        self._epoch, self._order = None, None

    def _permutation(self, epoch):
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
        return self._order

    def indices_for_step(self, step):
        """(epoch, example index) pairs of this rank at a micro-step."""
        first = step * self.global_batch + self.offset
        result = []
        for k in range(first, first + self.size):
            epoch, position = divmod(k, self.num_examples)
            result.append((epoch, int(self._permutation(epoch)[position])))
        return result

    def __iter__(self):
        while True:
            yield self.indices_for_step(self.step)
            self.step += 1


class IndexedExamples:
    """A datasets.Dataset read by (epoch, index): items carry both, for per-example masks.

    A batch of stored rows is read as one Arrow table and expanded with numpy (storage.expand_table);
    a mixture of corpora (MixedExamples) is read through its own indexing.
    """

    def __init__(self, dataset):
        from datasets import Dataset

        self.dataset = dataset
        self.table = dataset.with_format("arrow") if isinstance(dataset, Dataset) else None

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        item = self.dataset[index]
        item["epoch"], item["index"] = epoch, index
        return item

    def __getitems__(self, keys):
        if self.table is not None:
            items = expand_table(self.table[[index for _, index in keys]])
            for item, (epoch, index) in zip(items, keys):
                item["epoch"], item["index"] = epoch, index
            return items
        rows = self.dataset[[index for _, index in keys]]
        names = list(rows)
        return [dict({n: rows[n][k] for n in names}, epoch=e, index=i) for k, (e, i) in enumerate(keys)]
