"""ELECTRA's pretraining module: a generator and a discriminator trained jointly (Clark et al., 2020).

The generator is the discriminator scaled by ``generator-size`` (hidden size, heads and FFN
size); both share one embeddings module (token, position and type embeddings), and the
generator's output layer is tied to the token embeddings. Masked positions get tokens
sampled from the generator (no gradient through the sampling); the discriminator learns
which tokens were replaced, a sample equal to the original counting as not replaced.
"""

import os

import torch
import torch.nn.functional as F
from torch import nn

GENERATOR_DIR, DISCRIMINATOR_DIR = "generator", "discriminator"


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
