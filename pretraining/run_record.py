"""The record of a run: what decides it (checked when it is continued) and how far it got.

One RunRecord is made when a run starts. Each checkpoint holds it (trainer_state.json, with
the step reached), --do_continue compares it with the run it would continue, and the model
card reads it. Checkpoints written before this class hold the same keys as flat JSON, read
as they are.
"""

import dataclasses
from dataclasses import dataclass

from ja_common.errors import UserError

# preset keys a resumed run may change: they decide when to stop, save and log, not what is learned
RESUMABLE_KEYS = {"train-steps", "save-steps", "save-minutes", "logging-steps", "save-total-limit", "batch-size",
                  "torch-compile", "gradient-checkpointing", "attention-implementation"}

# how masks are drawn (pretraining/data/collators.py Masking), and how the runs whose records predate
# mask_draws drew theirs
MASK_DRAWS, MASK_DRAWS_BEFORE = ("counter", "generator"), "generator"

# what a continued run must share with its checkpoint, and how the message names it
SAME_RUN = (("family", "the model family"), ("tokenizer", "the tokenizer (--tokenizer_dir's files)"), ("seed", "--seed"),
            ("masking", "the masking (--masking, --do_whole_word_mask or the preset's \"masking\")"),
            ("validation_split_percentage", "--validation_split_percentage"),
            ("global_batch", "the global batch size (sum of batch-size over the nodes)"),
            ("examples", "the examples (the corpus files, their mix or weights; pass --allow_data_change to "
                         "continue on the new ones)"))


@dataclass
class RunRecord:
    # what the run is
    model_type: str
    family: str = None
    seed: int = None
    global_batch: int = None
    rank_batches: list = None
    masking: str = None  # token, whole-word, ngram or span
    mask_draws: str = None  # "counter" (data/masks.py); records without it: "generator" (MASK_DRAWS_BEFORE)
    tokenizer: str = None  # the tokenizer files' fingerprint
    examples: str = None  # the training examples' identity (pretraining/data/cache.py examples_identity)
    parameters: dict = None  # the preset as parameter.json gives it
    validation_split_percentage: float = None
    run_name: str = None
    # how far it got
    step: int = 0
    examples_seen: int = 0
    best_eval_loss: float = None
    last_train: dict = None  # the last logged training figures

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data):
        """A record read back; keys it does not know are ignored, missing ones left unset (None)."""
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        if "masking" not in data and data.get("whole_word_mask") is not None:  # written before --masking
            known["masking"] = "whole-word" if data["whole_word_mask"] else "token"
        return cls(**known)

    def differences(self, other, allowed=()):
        """What differs between this (a checkpoint's record) and ``other`` that a resume may not change;
        a key this record lacks (an older checkpoint's) or ``allowed`` lists is not compared."""
        different = [f"{label}: {getattr(self, key)!r} then, {getattr(other, key)!r} now"
                     for key, label in SAME_RUN if key not in allowed and getattr(self, key) is not None
                     and getattr(self, key) != getattr(other, key)]
        if self.parameters is not None:
            keys = sorted((set(self.parameters) | set(other.parameters)) - RESUMABLE_KEYS)
            changed = [k for k in keys if self.parameters.get(k) != other.parameters.get(k)]
            if changed:
                different.append(f"preset keys {', '.join(changed)}")
        return different

    def preset_record(self):
        """What a model directory records of how it was trained (pretraining_preset.json)."""
        return {"model_type": self.model_type, "family": self.family, "parameters": self.parameters,
                "seed": self.seed, "masking": self.masking, "mask_draws": self.mask_draws, "tokenizer": self.tokenizer}

    def draws_masks_by(self):
        """How this run draws its masks: as recorded, or as every run did before it was recorded."""
        if self.mask_draws not in (None, *MASK_DRAWS):
            raise UserError(f"this run's masks are drawn by {self.mask_draws!r}, which this version does not know: "
                            "continue or evaluate it with the version of ja-pretraining that trained it")
        return self.mask_draws or MASK_DRAWS_BEFORE
