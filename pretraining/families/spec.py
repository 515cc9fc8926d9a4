"""What a family is (``Family``), and the small pieces several families build theirs from.

Module-level imports stay light (no torch): presets.py reads the families to parse
parameter.json, and --prepare_only runs without torch. Models, forwards and collators import
what they need when they run.
"""

import os
from dataclasses import dataclass
from typing import Callable

from ja_common.errors import UserError


@dataclass
class Vocabulary:
    size: int  # the model's embedding rows (T5: the tokenizer plus its sentinels)
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int


def _no_check(preset, where):
    return None


def _no_weights(preset):
    return {}


@dataclass(kw_only=True, frozen=True)
class Family:
    """Everything the generic code needs to know about a family; see families/__init__.py."""

    name: str  # the "family" value in parameter.json
    title: str  # how the model card names it: "BERT", "GatedCNN"
    example_kind: str  # nsp, sop, packed or span (pretraining/data/builders.py)
    make_collator: Callable  # (preset, vocab, seed, masking, draws) -> a collator of items into a batch
    create: Callable  # (preset, vocab) -> the model to train: new, or continued from the preset's directory
    load: Callable  # (model_dir) -> a trained model (the final directory or a checkpoint)
    # (model, batch) -> {name: (sum, count)}, installed as the model's forward for training;
    # names "acc/..." are logged, not trained on. None: the model's own forward returns that.
    training_forward: Callable = None
    flops: Callable  # (model) -> a function of a batch: its model FLOPs (a float, from shapes alone)
    required_keys: tuple = ()  # preset keys the family needs besides the common ones
    check: Callable = _no_check  # (preset, where): raises UserError for the family's own keys
    loss_weights: Callable = _no_weights  # (preset) -> {objective: weight}, 1 where absent
    perplexity: tuple = ()  # objectives whose held-out perplexity is reported (language models)
    attention: bool = True  # "attention-implementation" applies
    extra_tokens: Callable = None  # (encoder) -> {token: id} the model adds to the vocabulary
    parts: tuple = ()  # sub-models saved in folders of their own, each with the tokenizer
    auto_class: str = None  # the transformers Auto class that loads the final directory
    pipeline: str = None  # the Hub's pipeline tag of the final model
    remote_code: bool = False  # the saved model carries its code: loads with trust_remote_code=True
    usage: tuple = None  # the model card's "Use" lines; None: loading with auto_class

    def __post_init__(self):
        if self.auto_class is None and self.usage is None:
            raise ValueError(f"family {self.name}: give auto_class or usage (how the model card says to load it)")

    @property
    def masked_lm(self):
        """Whether the family predicts masked tokens (the masking keys and flags apply)."""
        return self.make_collator is mlm_collator

    def usage_lines(self):
        if self.usage is not None:
            return list(self.usage)
        remote = ", trust_remote_code=True" if self.remote_code else ""
        return ["```python", f"from transformers import AutoTokenizer, {self.auto_class}",
                f"tokenizer = AutoTokenizer.from_pretrained(path{remote})",
                f"model = {self.auto_class}.from_pretrained(path{remote})", "```"]


# ---- pieces several families share ----

TRANSFORMER_KEYS = ("ffn-inner-hidden-size", "attention-heads")


def dropout(preset, default):
    return default if preset.dropout is None else preset.dropout


def check_whole_heads(preset, where):
    if preset.hidden_size % preset.attention_heads:
        raise UserError(f"{where}: \"hidden-size\" {preset.hidden_size} is not divisible by \"attention-heads\" "
                        f"{preset.attention_heads}")


def transformers_class(name):
    """() -> the transformers class of that name, imported when first needed."""

    def load():
        import transformers

        return getattr(transformers, name)

    return load


def single_model(model_class, build_config, frozen_modules=None):
    """(create, load) for a family whose model is one class with save_pretrained/from_pretrained.

    create builds a new model from the preset, or continues pretraining the directory in
    "pretrained_model_name_or_path" (its vocabulary checked, "frozen-layers" applied).
    """

    def create(preset, vocab):
        cls = model_class()
        path = preset.pretrained_model_name_or_path
        if not path:
            return cls(build_config(preset, vocab))
        if not os.path.isdir(path):
            raise UserError(f"pretrained_model_name_or_path {path} is not a directory")
        model = cls.from_pretrained(path)
        if model.config.vocab_size != vocab.size:
            raise UserError(f"{path} has a vocabulary of {model.config.vocab_size}, the tokenizer {vocab.size}: "
                            "continue pretraining with the tokenizer the model was trained with")
        if preset.frozen_layers >= 0:
            if frozen_modules is None:
                raise UserError(f"\"frozen-layers\": the {preset.family} family cannot freeze layers; use -1")
            for module in frozen_modules(model, preset.frozen_layers):
                module.requires_grad_(False)
        return model

    def load(model_dir):
        return model_class().from_pretrained(model_dir)

    return create, load


def mlm_collator(preset, vocab, seed, masking, draws="counter"):
    """``masking``: the run's masking mode (RunOptions.masking_mode); its settings come from the preset.
    ``draws``: how the masks are drawn (the run record's mask_draws, collators.py Masking)."""
    from ..data.collators import MaskedLMCollator, Masking

    return MaskedLMCollator(vocab.mask_id, vocab.pad_id, vocab.size, seed,
                            Masking(masking, preset.mask_percent / 100, preset.max_ngrams, preset.span_geo_prob,
                                    preset.span_max_length, draws))


def causal_collator(preset, vocab, seed, masking, draws=None):
    from ..data.collators import CausalLMCollator

    return CausalLMCollator()


def seq2seq_collator(preset, vocab, seed, masking, draws=None):
    from ..data.collators import Seq2SeqCollator

    return Seq2SeqCollator()


# the shared facts of the causal language models
CAUSAL_LM = dict(example_kind="packed", make_collator=causal_collator, auto_class="AutoModelForCausalLM",
                 pipeline="text-generation", perplexity=("lm",))


def own_model_config(config_class, family_name, preset, vocab, **extra):
    """The config of one of the project's own models (pretraining/models/): the sizes they share,
    and the base model in its auto_map, so AutoModel loads it as remote code too."""
    from ..models import add_base_model_to_auto_map

    config = config_class(vocab_size=vocab.size, embedding_size=preset.embedding_size or preset.hidden_size,
                          hidden_size=preset.hidden_size, num_layers=preset.number_of_layers,
                          dropout=dropout(preset, 0.1), pad_token_id=vocab.pad_id, bos_token_id=vocab.cls_id,
                          eos_token_id=vocab.sep_id, **extra)
    add_base_model_to_auto_map(config, family_name)
    return config


RECURRENT_CELLS = ("lstm", "gru", "rnn")  # the "cell" key (the first is the default): models/lstm.py and elmo.py


def recurrent_cell(preset):
    return preset.cell or RECURRENT_CELLS[0]


def check_cell(preset, where):
    if recurrent_cell(preset) not in RECURRENT_CELLS:
        raise UserError(f"{where}: \"cell\" must be one of {', '.join(RECURRENT_CELLS)}, not {preset.cell!r}")


# the project's own models carry their code and have no attention
OWN_MODEL = dict(attention=False, remote_code=True)
