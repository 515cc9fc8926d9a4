"""parameter.json presets -> a typed, validated Preset.

Keys are upstream's (retarfi/language-pretraining), so existing files keep working:
"number-of-layers", "hidden-size", "batch-size": {"-1": 128} or {"0": 100, "1": 56}, ...
"""

import json
import math
import os
from dataclasses import dataclass, field

from ja_common.errors import UserError

# key -> (attribute, type, default); default REQUIRED means the key must be present.
REQUIRED = object()
KEYS = {
    "number-of-layers": ("number_of_layers", int, REQUIRED),
    "hidden-size": ("hidden_size", int, REQUIRED),
    "sequence-length": ("sequence_length", int, REQUIRED),
    "learning-rate": ("learning_rate", float, REQUIRED),
    "batch-size": ("batch_size", dict, REQUIRED),
    "train-steps": ("train_steps", int, REQUIRED),
    "warmup-steps": ("warmup_steps", int, 0),
    "lr-scheduler": ("lr_scheduler", str, "linear"),  # linear, cosine, constant, warmup-stable-decay
    "decay-steps": ("decay_steps", int, None),  # warmup-stable-decay: the decay's length (a tenth of the run)
    "save-steps": ("save_steps", int, REQUIRED),
    "save-minutes": ("save_minutes", float, None),  # a checkpoint at least this often, besides save-steps
    "logging-steps": ("logging_steps", int, REQUIRED),
    "eval-steps": ("eval_steps", int, None),
    "ffn-inner-hidden-size": ("ffn_inner_hidden_size", int, None),
    "attention-heads": ("attention_heads", int, None),
    "embedding-size": ("embedding_size", int, None),
    "accumulation-steps": ("accumulation_steps", int, 1),
    "fp16-type": ("fp16_type", int, 0),
    "bf16": ("bf16", bool, False),
    "dropout": ("dropout", float, None),
    "weight-decay": ("weight_decay", float, 0.01),
    "save-total-limit": ("save_total_limit", int, 3),
    "pretrained_model_name_or_path": ("pretrained_model_name_or_path", str, None),
    "flozen-layers": ("frozen_layers", int, -1),
    "frozen-layers": ("frozen_layers", int, -1),
    "family": ("family", str, None),
    # ELECTRA
    "generator-size": ("generator_size", str, None),
    "discriminator-weight": ("discriminator_weight", float, 50.0),
    "pretrained_generator_model_name_or_path": ("pretrained_generator_model_name_or_path", str, None),
    "pretrained_discriminator_model_name_or_path": ("pretrained_discriminator_model_name_or_path", str, None),
    # T5 (target-length: upstream's; checked against what span corruption gives)
    "target-length": ("target_length", int, None),
    "noise-density": ("noise_density", float, 0.15),
    "mean-noise-span-length": ("mean_noise_span_length", float, 3.0),
    # Llama
    "key-value-heads": ("key_value_heads", int, None),  # grouped-query attention (default: one per head)
    "rope-theta": ("rope_theta", float, None),  # default: the family's (Llama 10,000; ModernBERT 160,000)
    # non-transformer families
    "kernel-size": ("kernel_size", int, None),
    "block-size": ("block_size", int, None),
    "weight-norm": ("weight_norm", bool, False),
    "initialization": ("initialization", str, "kaiming"),  # GatedCNN: measured in benchmarks/bench_custom_lm.py
    "tie-weights": ("tie_weights", bool, None),
    "projection-size": ("projection_size", int, None),
    "cell": ("cell", str, None),  # the recurrent families' cell (families/spec.py RECURRENT_CELLS)
    # masked-LM families: which units are predicted (pretraining/data/collators.py), and how many
    "masking": ("masking", str, None),  # token, whole-word, ngram, span (flags: --masking, --do_whole_word_mask)
    "mask-percent": ("mask_percent", float, 15.0),
    "max-ngrams": ("max_ngrams", int, 3),
    "span-geo-prob": ("span_geo_prob", float, 0.2),
    "span-max-length": ("span_max_length", int, 10),
    # DeBERTa-v2
    "position-buckets": ("position_buckets", int, 256),
    # ModernBERT
    "local-attention": ("local_attention", int, 128),  # the sliding window's width, in tokens
    "global-attention-every": ("global_attention_every", int, 3),  # every n-th layer attends globally
    "local-rope-theta": ("local_rope_theta", float, 10000.0),
    # data
    "short-seq-prob": ("short_seq_prob", float, 0.1),
    # speed (flags of the same names override them)
    "torch-compile": ("torch_compile", bool, False),
    "gradient-checkpointing": ("gradient_checkpointing", bool, False),
    "attention-implementation": ("attention_implementation", str, None),
}
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
LR_SCHEDULERS = ("linear", "cosine", "constant", "warmup-stable-decay")  # pretraining/modeling.py scheduler_for
MASKING_MODES = ("token", "whole-word", "ngram", "span")  # pretraining/data/collators.py Masking


@dataclass
class Preset:
    model_type: str
    family: str
    number_of_layers: int
    hidden_size: int
    sequence_length: int
    learning_rate: float
    batch_size: dict
    train_steps: int
    save_steps: int
    logging_steps: int
    save_minutes: float = None
    warmup_steps: int = 0
    lr_scheduler: str = "linear"
    decay_steps: int = None
    ffn_inner_hidden_size: int = None
    attention_heads: int = None
    embedding_size: int = None
    accumulation_steps: int = 1
    fp16_type: int = 0
    bf16: bool = False
    eval_steps: int = None
    torch_compile: bool = False
    gradient_checkpointing: bool = False
    attention_implementation: str = None
    dropout: float = None
    weight_decay: float = 0.01
    save_total_limit: int = 3
    pretrained_model_name_or_path: str = None
    frozen_layers: int = -1
    generator_size: str = None
    discriminator_weight: float = 50.0
    pretrained_generator_model_name_or_path: str = None
    pretrained_discriminator_model_name_or_path: str = None
    target_length: int = None
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    key_value_heads: int = None
    rope_theta: float = None
    kernel_size: int = None
    block_size: int = None
    tie_weights: bool = None
    weight_norm: bool = False
    initialization: str = "kaiming"
    projection_size: int = None
    cell: str = None
    masking: str = None
    mask_percent: float = 15.0
    max_ngrams: int = 3
    span_geo_prob: float = 0.2
    span_max_length: int = 10
    position_buckets: int = 256
    local_attention: int = 128
    global_attention_every: int = 3
    local_rope_theta: float = 10000.0
    short_seq_prob: float = 0.1
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def example_kind(self):
        """Which examples the family trains on (see pretraining/data/builders.py)."""
        return _families()[self.family].example_kind

    def batch_size_for_node(self, node_rank):
        """The batch size of one node; -1 means a single-node run."""
        sizes = self.batch_size
        if node_rank in sizes:
            return sizes[node_rank]
        if len(sizes) == 1 and -1 in sizes:
            return sizes[-1]
        ranks = ", ".join(str(r) for r in sorted(sizes))
        raise UserError(
            f"parameter.json '{self.model_type}': batch-size has no entry for node rank {node_rank} "
            f"(it has {ranks}); add \"{node_rank}\": N"
        )


def _families():
    from .families import FAMILIES  # the family specs (imported when a preset is read)

    return FAMILIES


def _family(model_type, data):
    families = _families()
    family = data.get("family")
    if family is None:
        family = next((f for f in sorted(families, key=len, reverse=True) if model_type.startswith(f)), None)
    if family not in families:
        raise UserError(
            f"parameter.json '{model_type}': cannot tell the model family; add \"family\": one of {', '.join(families)}"
        )
    return family


def _convert(model_type, key, value, kind):
    where = f"parameter.json '{model_type}': \"{key}\""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{where} must be true or false, not {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise UserError(f"{where} must be a whole number, not {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{where} must be a finite number, not {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise UserError(f"{where} must be a string, not {value!r}")
        return value
    if kind is dict:  # batch-size
        if not isinstance(value, dict) or not value:
            raise UserError(f"{where} must be an object like {{\"-1\": 128}} or {{\"0\": 100, \"1\": 56}}")
        sizes = {}
        for rank, size in value.items():
            try:
                rank_number = int(rank)
            except ValueError:
                raise UserError(f"{where}: node rank {rank!r} is not a number") from None
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise UserError(f"{where}: the batch size of node {rank} must be a positive whole number, not {size!r}")
            sizes[rank_number] = size
        if -1 in sizes and len(sizes) > 1:
            raise UserError(f"{where}: \"-1\" (single node) cannot be mixed with node ranks")
        return sizes
    raise AssertionError(kind)


def parse_preset(model_type, data):
    if not isinstance(data, dict):
        raise UserError(f"parameter.json '{model_type}' must be an object of keys")
    family = _family(model_type, data)
    values = {"model_type": model_type, "family": family, "raw": data}
    for key, value in data.items():
        if key not in KEYS:
            raise UserError(f"parameter.json '{model_type}': unknown key \"{key}\" (known: {', '.join(sorted(KEYS))})")
        attr, kind, _ = KEYS[key]
        values[attr] = _convert(model_type, key, value, kind)
    required = [k for k, (_, _, d) in KEYS.items() if d is REQUIRED] + list(_families()[family].required_keys)
    missing = [k for k in required if k not in data]
    if missing:
        raise UserError(f"parameter.json '{model_type}': missing key(s) {', '.join(repr(k) for k in missing)}")
    preset = Preset(**values)
    _check_ranges(preset)
    return preset


def _check_ranges(p):
    where = f"parameter.json '{p.model_type}'"
    for attr in ("number_of_layers", "hidden_size", "sequence_length", "train_steps", "save_steps", "logging_steps",
                 "accumulation_steps"):
        if getattr(p, attr) < 1:
            raise UserError(f"{where}: \"{attr.replace('_', '-')}\" must be at least 1")
    if p.eval_steps is not None and p.eval_steps < 1:
        raise UserError(f"{where}: \"eval-steps\" must be at least 1")
    if p.weight_decay < 0:
        raise UserError(f"{where}: \"weight-decay\" must not be negative")
    if p.save_total_limit < 0:
        raise UserError(f"{where}: \"save-total-limit\" must be 0 (keep every checkpoint) or more")
    if not 0 <= p.short_seq_prob <= 1:
        raise UserError(f"{where}: \"short-seq-prob\" must be in [0, 1]")
    _check_frozen_layers(p, where)
    if p.save_minutes is not None and p.save_minutes <= 0:
        raise UserError(f"{where}: \"save-minutes\" must be positive")
    if p.lr_scheduler not in LR_SCHEDULERS:
        raise UserError(f"{where}: \"lr-scheduler\" must be one of {', '.join(LR_SCHEDULERS)}, not {p.lr_scheduler!r}")
    if p.decay_steps is not None and not 0 < p.decay_steps <= p.train_steps - p.warmup_steps:
        raise UserError(f"{where}: \"decay-steps\" must be between 1 and train-steps less warmup-steps "
                        f"({p.train_steps - p.warmup_steps})")
    if p.learning_rate <= 0:
        raise UserError(f"{where}: \"learning-rate\" must be positive")
    if p.fp16_type not in (0, 1, 2, 3):
        raise UserError(f"{where}: \"fp16-type\" must be 0 (off) or 1-3 (mixed fp16)")
    if p.attention_implementation is not None and p.attention_implementation not in ATTENTION_IMPLEMENTATIONS:
        raise UserError(f"{where}: \"attention-implementation\" must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)}")
    if p.fp16_type and p.bf16:
        raise UserError(f"{where}: choose either \"fp16-type\" or \"bf16\", not both")
    if p.dropout is not None and not 0 <= p.dropout < 1:
        raise UserError(f"{where}: \"dropout\" must be in [0, 1)")
    if p.example_kind == "nsp" or p.example_kind == "sop":
        if p.sequence_length < 8:
            raise UserError(f"{where}: \"sequence-length\" must be at least 8 for sentence pairs")
    for key, value in (("embedding-size", p.embedding_size), ("projection-size", p.projection_size)):
        if value is not None and value < 1:
            raise UserError(f"{where}: \"{key}\" must be at least 1")
    if not 0 < p.noise_density < 1 or p.mean_noise_span_length < 1:
        raise UserError(f"{where}: \"noise-density\" must be in (0, 1) and \"mean-noise-span-length\" at least 1")
    _check_masking(p, where)
    _families()[p.family].check(p, where)


def _check_frozen_layers(p, where):
    """Layers are frozen in a pretrained model only: on a new one the key would silently do nothing."""
    key = "flozen-layers" if "flozen-layers" in p.raw else "frozen-layers"
    if p.frozen_layers < -1:
        raise UserError(f"{where}: \"{key}\" must be -1 (train every layer) or a number of layers")
    pretrained = (p.pretrained_model_name_or_path or p.pretrained_generator_model_name_or_path
                  or p.pretrained_discriminator_model_name_or_path)
    if p.frozen_layers >= 0 and not pretrained:
        raise UserError(f"{where}: \"{key}\" freezes layers of a pretrained model: add "
                        "\"pretrained_model_name_or_path\", or use -1")
    if p.frozen_layers > p.number_of_layers:
        raise UserError(f"{where}: \"{key}\" {p.frozen_layers} is more than the {p.number_of_layers} layers")


def _check_masking(p, where):
    masking_keys = ("masking", "mask-percent", "max-ngrams", "span-geo-prob", "span-max-length")
    if not _families()[p.family].masked_lm:
        given = [k for k in masking_keys if k in p.raw]
        if given:
            raise UserError(f"{where}: {', '.join(given)}: the {p.family} family predicts no masked tokens; remove it")
        return
    if p.masking is not None and p.masking not in MASKING_MODES:
        raise UserError(f"{where}: \"masking\" must be one of {', '.join(MASKING_MODES)}, not {p.masking!r}")
    if not 0 < p.mask_percent < 100:
        raise UserError(f"{where}: \"mask-percent\" must be between 0 and 100")
    if p.max_ngrams < 1 or p.span_max_length < 1:
        raise UserError(f"{where}: \"max-ngrams\" and \"span-max-length\" must be at least 1")
    if not 0 < p.span_geo_prob <= 1:
        raise UserError(f"{where}: \"span-geo-prob\" must be in (0, 1]")


def load_presets(parameter_file):
    if not os.path.isfile(parameter_file):
        raise UserError(f"--parameter_file {parameter_file} does not exist")
    try:
        with open(parameter_file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise UserError(f"--parameter_file {parameter_file} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise UserError(f"--parameter_file {parameter_file} must hold an object of model types")
    return data


def load_preset(parameter_file, model_type):
    data = load_presets(parameter_file)
    if model_type not in data:
        raise UserError(
            f"--model_type {model_type} is not in {parameter_file}; available: {', '.join(sorted(data))}"
        )
    return parse_preset(model_type, data[model_type])
