"""Everything before a batch reaches the model, one stage a module:

    prepare.py   a run's inputs (--input_file, --dataset_dir, held-out data) -> examples folders
    cache.py     the examples cache: fingerprint, lock, build once, install, open
    build.py     corpus chunks -> examples, in worker processes
    builders.py  the example builders of each kind: sentence pairs, packed blocks, span corruption
    storage.py   compact columns on disk, expanded back to what the collators read
    mixing.py    several corpora mixed by weight
    sampler.py   which examples each rank reads at each step (resume needs only the step)
    collators.py examples -> a batch, with dynamic masking
    masks.py     the masks of a whole batch at once, every draw a hash of (seed, epoch, example, position)

No module here imports torch at import time but collators.py: --prepare_only runs without it.
"""
