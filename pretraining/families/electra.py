"""ELECTRA (Clark et al. 2020): replaced token detection. A generator (the discriminator scaled
by "generator-size") and a discriminator are trained jointly, sharing their embeddings; the
module is pretraining/models/electra.py. A run saves both in generator/ and discriminator/,
each with the tokenizer; extract_electra_model.py splits them into two model directories.
"""

import os
from fractions import Fraction

from ja_common.errors import UserError

from .spec import TRANSFORMER_KEYS, Family, check_whole_heads, dropout, mlm_collator

def generator_fraction(preset):
    text = preset.generator_size or "1/4"
    try:
        fraction = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"parameter.json '{preset.model_type}': \"generator-size\" must be a fraction like \"1/4\", "
                        f"not {text!r}") from None
    if not 0 < fraction <= 1:
        raise UserError(f"parameter.json '{preset.model_type}': \"generator-size\" must be in (0, 1], not {text}")
    return fraction


def generator_sizes(preset):
    """(hidden, heads, ffn) of the generator, or a clear error when no whole head remains."""
    fraction = generator_fraction(preset)
    heads = preset.attention_heads * fraction
    hidden = preset.hidden_size * fraction
    ffn = preset.ffn_inner_hidden_size * fraction
    where = f"parameter.json '{preset.model_type}': \"generator-size\" {preset.generator_size or '1/4'}"
    if heads.denominator != 1 or heads < 1:
        raise UserError(f"{where} leaves {float(heads):g} of the {preset.attention_heads} attention heads: choose a "
                        "size that keeps whole heads, or more \"attention-heads\"")
    if hidden.denominator != 1 or ffn.denominator != 1 or int(hidden) % int(heads):
        raise UserError(f"{where} gives a hidden size of {float(hidden):g} that {int(heads)} heads cannot share")
    return int(hidden), int(heads), int(ffn)


def configs(preset, vocab):
    from transformers import ElectraConfig

    rate = dropout(preset, 0.1)
    common = dict(vocab_size=vocab.size, embedding_size=preset.embedding_size or preset.hidden_size,
                  num_hidden_layers=preset.number_of_layers, max_position_embeddings=max(512, preset.sequence_length),
                  type_vocab_size=2, pad_token_id=vocab.pad_id, hidden_dropout_prob=rate,
                  attention_probs_dropout_prob=rate)
    hidden, heads, ffn = generator_sizes(preset)
    generator = ElectraConfig(hidden_size=hidden, num_attention_heads=heads, intermediate_size=ffn, **common)
    discriminator = ElectraConfig(hidden_size=preset.hidden_size, num_attention_heads=preset.attention_heads,
                                  intermediate_size=preset.ffn_inner_hidden_size, **common)
    return generator, discriminator


def check(preset, where):
    check_whole_heads(preset, where)
    generator_sizes(preset)  # a generator without a whole attention head is refused here, before any work


def create(preset, vocab):
    from ..models.electra import ElectraPretrainingModel

    generator_dir = preset.pretrained_generator_model_name_or_path
    discriminator_dir = preset.pretrained_discriminator_model_name_or_path
    if bool(generator_dir) != bool(discriminator_dir):
        raise UserError(f"parameter.json '{preset.model_type}': continued ELECTRA pretraining needs both "
                        "pretrained_generator_model_name_or_path and pretrained_discriminator_model_name_or_path")
    if not generator_dir:
        return ElectraPretrainingModel.from_configs(*configs(preset, vocab))
    for path in (generator_dir, discriminator_dir):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise UserError(f"{path} is not a model directory (no config.json)")
    model = ElectraPretrainingModel.from_directories(generator_dir, discriminator_dir)
    if model.discriminator.config.vocab_size != vocab.size:
        raise UserError(f"{discriminator_dir} has a vocabulary of {model.discriminator.config.vocab_size}, the "
                        f"tokenizer {vocab.size}: use the tokenizer the model was trained with")
    if preset.frozen_layers >= 0:
        model.discriminator.electra.embeddings.requires_grad_(False)
        for part in (model.generator, model.discriminator):
            for layer in part.electra.encoder.layer[: preset.frozen_layers]:
                layer.requires_grad_(False)
    return model


def load(model_dir):
    """A trained ELECTRA run's final directory or checkpoint (its generator/ and discriminator/)."""
    from ..models.electra import DISCRIMINATOR_DIR, GENERATOR_DIR, ElectraPretrainingModel

    return ElectraPretrainingModel.from_directories(os.path.join(model_dir, GENERATOR_DIR),
                                                    os.path.join(model_dir, DISCRIMINATOR_DIR))


def flops(model):
    """Both models' bodies see every token, their attention too; the generator's output layer
    runs at the masked positions (the discriminator's head is one number a token, in the body)."""
    from ..flops import DenseFlops, attention_flops, body_parameters, masked_tokens, output_layer_flops

    head = model.generator.generator_lm_head
    attention = sum(attention_flops(c.num_hidden_layers, c.hidden_size)
                    for c in (model.generator.config, model.discriminator.config))
    return DenseFlops(body_parameters(model, head), output_layer_flops(head), attention, masked_tokens)


FAMILY = Family(name="electra", title="ELECTRA", example_kind="packed", make_collator=mlm_collator, create=create,
                load=load, flops=flops, required_keys=TRANSFORMER_KEYS, check=check,
                loss_weights=lambda preset: {"discriminator": preset.discriminator_weight},
                parts=("generator", "discriminator"),  # the folders ElectraPretrainingModel.save_pretrained writes
                usage=("Split it with `extract_electra_model.py`; `generator/` loads with AutoModelForMaskedLM, "
                       "`discriminator/` with AutoModelForPreTraining.",))
