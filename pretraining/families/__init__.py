"""Model families: one module each, holding everything that is the family's; the rest of the
project reads the family's ``Family`` spec (families/spec.py) and names no family.

Adding a family is one file and one line:

1. ``families/<name>.py`` with a ``FAMILY = Family(...)`` (keyword arguments only). It says
   - which examples and collator feed the model: ``example_kind`` (nsp, sop, packed, span) and
     ``make_collator`` (spec.py has the MLM, causal and seq2seq ones);
   - how the preset becomes a model and a trained directory a model again: ``create`` and
     ``load`` (``single_model`` makes both for a model of one class with save_pretrained);
   - what a training step computes: ``training_forward`` returns {objective: (sum, count)}
     (the shared pieces are in families/losses.py: summed cross-entropy, the chunked
     output-layer loss, masked rows, accuracy), ``loss_weights`` weighs the objectives and
     ``perplexity`` names those a held-out perplexity is reported for;
   - its model FLOPs per micro-batch: ``flops`` (its formula from the pieces in pretraining/flops.py);
   - its preset keys: ``required_keys`` and ``check``;
   - how the result loads: ``auto_class``, ``pipeline``, ``remote_code``, ``parts``, ``usage``.
   The module's imports stay light (no torch at import time: presets are parsed, and
   --prepare_only runs, without it); a model that transformers lacks goes in pretraining/models/.
2. Its module's name in FAMILY_MODULES below; the family's name is then a valid "family" in
   parameter.json.

Losses are returned as (sum, count) per objective, so the training loop can divide by the
count over the whole global batch: the update is then the one a single process would make,
whatever the number of ranks and their batch sizes.
"""

import importlib

from ja_common.errors import UserError

from .spec import Family, Vocabulary  # noqa: F401  (the names other modules use)

# the family modules, one line each: every module's FAMILY is registered under its name
FAMILY_MODULES = (
    "bert",
    "albert",
    "electra",
    "gpt2",
    "t5",
    "gatedcnn",
    "lstm",
    "elmo",
    "roberta",
    "llama",
    "deberta",
    "modernbert",
)
FAMILIES = {family.name: family for family in
            (importlib.import_module(f"{__name__}.{module}").FAMILY for module in FAMILY_MODULES)}


def family_of(preset):
    if preset.family not in FAMILIES:
        raise UserError(f"parameter.json '{preset.model_type}': the {preset.family} family cannot be trained yet "
                        f"(available: {', '.join(FAMILIES)})")
    return FAMILIES[preset.family]


def vocabulary_for(preset, encoder):
    ids = {t: encoder.token_id(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")}
    extra = family_of(preset).extra_tokens
    size = max([encoder.vocab_size] + [i + 1 for i in (extra(encoder).values() if extra else [])])
    return Vocabulary(size, ids["[PAD]"], ids["[CLS]"], ids["[SEP]"], ids["[MASK]"])
