"""ELMo (Peters et al., 2018): a bidirectional LSTM language model (or GRU, or Elman RNN: ``cell``).

Self-contained (torch + transformers only): saved beside models for trust_remote_code.
Separate forward and backward stacks of LSTM layers with a projection after each layer and
residual connections between layers; the backward stack reads the sequence reversed, so it
never sees the token it predicts. One softmax is shared by both directions. ElmoModel
returns every layer's representation (layer 0: the token embedding, for both directions)
and a learned scalar mix, gamma * sum_j softmax(w)_j h_j, ready for downstream use.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput


# the recurrent cells (UER-py's bilstm, bigru, birnn); pretraining/models/lstm.py has the same table
CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class ElmoConfig(PretrainedConfig):
    model_type = "elmo_bilm"

    def __init__(self, vocab_size=32768, embedding_size=512, hidden_size=4096, projection_size=512, num_layers=2,
                 dropout=0.1, initializer_range=0.05, cell="lstm", **kwargs):
        self.vocab_size, self.embedding_size, self.hidden_size = vocab_size, embedding_size, hidden_size
        self.projection_size, self.num_layers = projection_size, num_layers
        self.dropout, self.initializer_range, self.cell = dropout, initializer_range, cell
        super().__init__(**kwargs)


@dataclass
class ElmoOutput(ModelOutput):
    loss: torch.Tensor = None
    forward_loss: torch.Tensor = None
    backward_loss: torch.Tensor = None
    forward_logits: torch.Tensor = None
    backward_logits: torch.Tensor = None
    mixed_representation: torch.Tensor = None  # [batch, time, 2 * projection_size]
    layer_representations: tuple = None  # num_layers + 1 tensors of [batch, time, 2 * projection_size]
    forward_states: tuple = None
    backward_states: tuple = None


class LstmStack(nn.Module):
    """Recurrent layers, each projected to projection_size, with residual connections between layers."""

    def __init__(self, config):
        super().__init__()
        size = config.projection_size
        self.cells = nn.ModuleList(CELLS[config.cell](size, config.hidden_size, batch_first=True)
                                   for _ in range(config.num_layers))
        self.projections = nn.ModuleList(nn.Linear(config.hidden_size, size) for _ in range(config.num_layers))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        outputs = []
        for i, (cell, projection) in enumerate(zip(self.cells, self.projections)):
            y = projection(cell(x)[0])
            if i > 0:
                y = y + x  # residual between layers
            x = self.dropout(y)
            outputs.append(y)
        return outputs


class ElmoPreTrainedModel(PreTrainedModel):
    config_class = ElmoConfig
    base_model_prefix = "elmo"

    def _init_weights(self, module):
        r = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.uniform_(module.weight, -r, r)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.RNNBase):
            for name, parameter in module.named_parameters():
                nn.init.uniform_(parameter, -r, r) if "weight" in name else nn.init.zeros_(parameter)


class ElmoModel(ElmoPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.token_projection = (nn.Linear(config.embedding_size, config.projection_size)
                                 if config.embedding_size != config.projection_size else nn.Identity())
        self.forward_stack = LstmStack(config)
        self.backward_stack = LstmStack(config)
        self.dropout = nn.Dropout(config.dropout)
        self.mix_weights = nn.Parameter(torch.zeros(config.num_layers + 1))
        self.gamma = nn.Parameter(torch.ones(1))
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, value):
        self.embeddings = value

    def forward(self, input_ids, **kwargs):
        tokens = self.dropout(self.token_projection(self.embeddings(input_ids)))
        forward_states = self.forward_stack(tokens)
        backward_states = [s.flip(1) for s in self.backward_stack(tokens.flip(1))]
        layers = [torch.cat([tokens, tokens], dim=-1)]
        layers += [torch.cat([f, b], dim=-1) for f, b in zip(forward_states, backward_states)]
        weights = torch.softmax(self.mix_weights, dim=0)
        mixed = self.gamma * sum(w * layer for w, layer in zip(weights, layers))
        return ElmoOutput(mixed_representation=mixed, layer_representations=tuple(layers),
                          forward_states=tuple(forward_states), backward_states=tuple(backward_states))


class ElmoForPreTraining(ElmoPreTrainedModel):
    """The biLM: the forward stack predicts token t+1, the backward stack token t-1."""

    def __init__(self, config):
        super().__init__(config)
        self.elmo = ElmoModel(config)
        self.softmax = nn.Linear(config.projection_size, config.vocab_size)  # shared by both directions
        self.post_init()

    def get_output_embeddings(self):
        return self.softmax

    def forward(self, input_ids, labels=None, **kwargs):
        outputs = self.elmo(input_ids)
        forward_logits = self.softmax(self.elmo.dropout(outputs.forward_states[-1]))
        backward_logits = self.softmax(self.elmo.dropout(outputs.backward_states[-1]))
        loss = forward_loss = backward_loss = None
        if labels is not None:
            vocab = forward_logits.size(-1)
            forward_loss = F.cross_entropy(forward_logits[:, :-1].reshape(-1, vocab).float(), labels[:, 1:].reshape(-1))
            backward_loss = F.cross_entropy(backward_logits[:, 1:].reshape(-1, vocab).float(), labels[:, :-1].reshape(-1))
            loss = (forward_loss + backward_loss) / 2
        return ElmoOutput(loss=loss, forward_loss=forward_loss, backward_loss=backward_loss,
                          forward_logits=forward_logits, backward_logits=backward_logits,
                          mixed_representation=outputs.mixed_representation,
                          layer_representations=outputs.layer_representations,
                          forward_states=outputs.forward_states, backward_states=outputs.backward_states)
