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

from ja_common.errors import UserError

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

    def save_pretrained(self, directory, state_dict=None):
        """Two model directories; ``state_dict`` (this module's, e.g. gathered by accelerate) is split between them."""
        for name, part in ((GENERATOR_DIR, self.generator), (DISCRIMINATOR_DIR, self.discriminator)):
            own = None if state_dict is None else {k[len(name) + 1:]: v for k, v in state_dict.items()
                                                    if k.startswith(name + ".")}
            part.save_pretrained(os.path.join(directory, name), state_dict=own)

    def forward(self, batch):
        """Returns {name: (sum, count)}: the two losses and the accuracies for logging.

        The generator's output layer runs at the masked positions only (the collator lists them
        as flat indices); nothing here needs the device to report a count to the host.
        """
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        token_type_ids, positions, labels = batch.get("token_type_ids"), batch["mlm_positions"], batch["mlm_labels"]
        hidden = self.generator.electra(input_ids=input_ids, attention_mask=attention_mask,
                                        token_type_ids=token_type_ids, return_dict=False)[0]
        selected = hidden.reshape(-1, hidden.size(-1)).index_select(0, positions)
        logits = self.generator.generator_lm_head(self.generator.generator_predictions(selected)).float()
        mlm_sum = F.cross_entropy(logits, labels, reduction="sum")
        with torch.no_grad():
            sampled = torch.distributions.Categorical(logits=logits).sample()
            corrupted = input_ids.reshape(-1).index_copy(0, positions, sampled).view_as(input_ids)
            original = input_ids.reshape(-1).index_copy(0, positions, labels).view_as(input_ids)
            replaced = (corrupted != original).float()
        judged = self.discriminator(input_ids=corrupted, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids).logits.float()
        real = attention_mask.float()
        disc_sum = (F.binary_cross_entropy_with_logits(judged, replaced, reduction="none") * real).sum()
        with torch.no_grad():
            said_replaced = (judged > 0).float()
            is_replaced = replaced * real
            is_original = (1 - replaced) * real
            generator_correct = (logits.argmax(-1) == labels).sum().float()
        n_masked = torch.tensor(len(positions), device=logits.device)
        return {
            "generator": (mlm_sum, n_masked),
            "discriminator": (disc_sum, real.sum()),
            "acc/generator": (generator_correct, n_masked),
            "acc/discriminator_replaced": ((said_replaced * is_replaced).sum(), is_replaced.sum()),
            "acc/discriminator_original": (((1 - said_replaced) * is_original).sum(), is_original.sum()),
        }


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


def load_electra(model_dir):
    """A trained ELECTRA run's final directory or checkpoint (its generator/ and discriminator/)."""
    return ElectraPretrainingModel.from_directories(os.path.join(model_dir, GENERATOR_DIR),
                                                    os.path.join(model_dir, DISCRIMINATOR_DIR))
