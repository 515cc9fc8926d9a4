"""Recurrent language model: embedding, a multi-layer LSTM (or GRU, or Elman RNN: ``cell``) with
dropout, optionally tied softmax.

Self-contained (torch + transformers only): saved beside models for trust_remote_code.
``generate()`` carries the recurrent state between steps instead of re-running the prefix.
The model keeps that state itself, for the length of one ``generate()`` call: how
transformers carries a model's cache between steps has changed between 5.x releases
(5.24 carries only ``outputs["cache"]``, a ``Cache`` object), while the hook used here,
``prepare_inputs_for_generation`` called with the whole sequence at every step, is the
documented one.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput


# the recurrent cells (UER-py's lstm, gru and rnn encoders); pretraining/models/elmo.py has the same table
CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class LstmLmConfig(PretrainedConfig):
    model_type = "lstm_lm"

    def __init__(self, vocab_size=32768, embedding_size=256, hidden_size=512, num_layers=2, dropout=0.1,
                 tie_word_embeddings=False, initializer_range=0.05, cell="lstm", **kwargs):
        self.vocab_size, self.embedding_size, self.hidden_size = vocab_size, embedding_size, hidden_size
        self.num_layers, self.dropout, self.initializer_range = num_layers, dropout, initializer_range
        self.cell = cell
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


@dataclass
class LstmOutput(ModelOutput):
    loss: torch.Tensor = None
    logits: torch.Tensor = None
    last_hidden_state: torch.Tensor = None
    state: tuple = None  # LSTM: (h, c), each [num_layers, batch, hidden_size]; GRU, RNN: h


class LstmPreTrainedModel(PreTrainedModel):
    config_class = LstmLmConfig
    base_model_prefix = "lstm_lm"

    def _init_weights(self, module):
        r = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.uniform_(module.weight, -r, r)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.RNNBase):
            for name, parameter in module.named_parameters():
                nn.init.uniform_(parameter, -r, r) if "weight" in name else nn.init.zeros_(parameter)


class LstmModel(LstmPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        # named "lstm" whatever the cell: the weights' names of the models saved before the other cells
        self.lstm = CELLS[config.cell](config.embedding_size, config.hidden_size, config.num_layers, batch_first=True,
                                       dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, value):
        self.embeddings = value

    def forward(self, input_ids, state=None, **kwargs):
        x = self.dropout(self.embeddings(input_ids))
        output, state = self.lstm(x, state)
        return LstmOutput(last_hidden_state=self.dropout(output), state=state)


class LstmForCausalLM(LstmPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "lstm_lm.embeddings.weight"}  # used when tie_word_embeddings

    def __init__(self, config):
        super().__init__(config)
        self.lstm_lm = LstmModel(config)
        # a tied softmax needs the embedding width: project the LSTM output to it
        self.projection = (nn.Linear(config.hidden_size, config.embedding_size)
                           if config.tie_word_embeddings and config.hidden_size != config.embedding_size else None)
        width = config.embedding_size if config.tie_word_embeddings else config.hidden_size
        self.lm_head = nn.Linear(width, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def generate(self, *args, **kwargs):
        kwargs["use_cache"] = False  # no transformers Cache: the state is carried here instead
        self._carried = None  # (the sequence the state has read, the state) during this call
        try:
            return super().generate(*args, **kwargs)
        finally:
            self._carried = None

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        carried = getattr(self, "_carried", None)
        if carried is not None and carried[0].shape[1] == input_ids.shape[1] - 1:
            seen, state = carried
            # which row of the last step each row continues (beam search reorders rows)
            same = (input_ids[:, None, :-1] == seen[None]).all(-1)
            if bool(same.any(1).all()):
                rows = same.int().argmax(1)
                state = tuple(s[:, rows] for s in state) if isinstance(state, tuple) else state[:, rows]
                # the state already holds the prefix: feed the newest token only
                return {"input_ids": input_ids[:, -1:], "state": state, "generated_ids": input_ids}
        return {"input_ids": input_ids, "state": None, "generated_ids": input_ids}

    def forward(self, input_ids, state=None, labels=None, generated_ids=None, **kwargs):
        outputs = self.lstm_lm(input_ids, state=state)
        if generated_ids is not None:  # inside generate(): keep the state for the next step
            self._carried = (generated_ids, outputs.state)
        hidden = outputs.last_hidden_state
        if self.projection is not None:
            hidden = self.projection(hidden)
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1))
        return LstmOutput(loss=loss, logits=logits, last_hidden_state=outputs.last_hidden_state, state=outputs.state)
