"""A toy family, written as a new family is: this one file, and one line that registers it
(``FAMILIES["toy"] = FAMILY``, done by tests/test_registry.py). Its model is a bag-of-previous-token
language model: the next token from the embedding of the current one."""

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from pretraining.families.spec import Family, causal_collator, single_model


class ToyConfig(PretrainedConfig):
    model_type = "ja_pretraining_toy"

    def __init__(self, vocab_size=100, hidden_size=16, **kwargs):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        super().__init__(**kwargs)


class ToyLM(PreTrainedModel):
    config_class = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids):
        return self.head(self.embed(input_ids))


def config(preset, vocab):
    return ToyConfig(vocab_size=vocab.size, hidden_size=preset.hidden_size)


def training_forward(self, batch):
    ids = batch["input_ids"]
    logits = self.head(self.embed(ids[:, :-1]))
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="sum")
    return {"lm": (loss, torch.tensor(ids[:, 1:].numel(), device=ids.device))}


def flops(model):
    """Only the output layer has weights that multiply (the embedding is a lookup)."""
    from pretraining.flops import DenseFlops, output_layer_flops

    return DenseFlops(0, output_layer_flops(model.head))


create, load = single_model(lambda: ToyLM, config)

FAMILY = Family(name="toy", title="Toy", example_kind="packed", make_collator=causal_collator, create=create,
                load=load, training_forward=training_forward, flops=flops, perplexity=("lm",), attention=False,
                usage=("Load it with `tests/toy_family.py`'s `ToyLM.from_pretrained(path)`.",))
