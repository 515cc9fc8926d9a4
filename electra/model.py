"""ELECTRA pretraining: a generator and a discriminator trained jointly (Clark et al., 2020).

The generator is the discriminator scaled by ``generator-size`` (hidden size, heads and FFN
size); both share one embeddings module (token, position and type embeddings), and the
generator's output layer is tied to the token embeddings. Masked positions get tokens
sampled from the generator (no gradient through the sampling); the discriminator learns
which tokens were replaced, a sample equal to the original counting as not replaced.
"""

import os
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.errors import UserError

GENERATOR_DIR, DISCRIMINATOR_DIR = "generator", "discriminator"


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


def electra_configs(preset, vocab):
    from transformers import ElectraConfig

    dropout = 0.1 if preset.dropout is None else preset.dropout
    common = dict(vocab_size=vocab.size, embedding_size=preset.embedding_size or preset.hidden_size,
                  num_hidden_layers=preset.number_of_layers, max_position_embeddings=max(512, preset.sequence_length),
                  type_vocab_size=2, pad_token_id=vocab.pad_id, hidden_dropout_prob=dropout,
                  attention_probs_dropout_prob=dropout)
    hidden, heads, ffn = generator_sizes(preset)
    generator = ElectraConfig(hidden_size=hidden, num_attention_heads=heads, intermediate_size=ffn, **common)
    discriminator = ElectraConfig(hidden_size=preset.hidden_size, num_attention_heads=preset.attention_heads,
                                  intermediate_size=preset.ffn_inner_hidden_size, **common)
    return generator, discriminator


class ElectraPretrainingModel(nn.Module):
    def __init__(self, generator, discriminator):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator
        self.share_embeddings()

    def share_embeddings(self):
        self.generator.electra.embeddings = self.discriminator.electra.embeddings
        self.generator.generator_lm_head.weight = self.discriminator.electra.embeddings.word_embeddings.weight

    @classmethod
    def from_configs(cls, generator_config, discriminator_config):
        from transformers import ElectraForMaskedLM, ElectraForPreTraining

        return cls(ElectraForMaskedLM(generator_config), ElectraForPreTraining(discriminator_config))

    @classmethod
    def from_directories(cls, generator_dir, discriminator_dir):
        from transformers import ElectraForMaskedLM, ElectraForPreTraining

        return cls(ElectraForMaskedLM.from_pretrained(generator_dir),
                   ElectraForPreTraining.from_pretrained(discriminator_dir))

    def save_pretrained(self, directory):
        self.generator.save_pretrained(os.path.join(directory, GENERATOR_DIR))
        self.discriminator.save_pretrained(os.path.join(directory, DISCRIMINATOR_DIR))

    def forward(self, input_ids, attention_mask, token_type_ids, labels):
        """Returns {name: (sum, count)}: the two losses and the accuracies for logging."""
        generated = self.generator(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        logits = generated.logits.float()
        masked = labels != -100
        mlm_sum = F.cross_entropy(logits[masked], labels[masked], reduction="sum")
        with torch.no_grad():
            sampled = torch.distributions.Categorical(logits=logits[masked]).sample()
            original = torch.where(masked, labels, input_ids)
            corrupted = input_ids.clone()
            corrupted[masked] = sampled
            replaced = (corrupted != original).float()
        judged = self.discriminator(input_ids=corrupted, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids).logits.float()
        real = attention_mask.bool()
        disc_sum = F.binary_cross_entropy_with_logits(judged[real], replaced[real], reduction="sum")
        with torch.no_grad():
            said_replaced = judged > 0
            is_replaced = replaced.bool() & real
            is_original = ~replaced.bool() & real
            generator_correct = (logits[masked].argmax(-1) == labels[masked]).sum()
        n_masked, n_real = masked.sum(), real.sum()
        return {
            "generator": (mlm_sum, n_masked),
            "discriminator": (disc_sum, n_real),
            "acc/generator": (generator_correct.float(), n_masked),
            "acc/discriminator_replaced": ((said_replaced & is_replaced).sum().float(), is_replaced.sum()),
            "acc/discriminator_original": ((~said_replaced & is_original).sum().float(), is_original.sum()),
        }


def electra_losses(model, batch):
    return model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), batch["labels"])


def create_electra(preset, vocab):
    generator_dir = preset.pretrained_generator_model_name_or_path
    discriminator_dir = preset.pretrained_discriminator_model_name_or_path
    if bool(generator_dir) != bool(discriminator_dir):
        raise UserError(f"parameter.json '{preset.model_type}': continued ELECTRA pretraining needs both "
                        "pretrained_generator_model_name_or_path and pretrained_discriminator_model_name_or_path")
    if not generator_dir:
        return ElectraPretrainingModel.from_configs(*electra_configs(preset, vocab))
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
