"""GatedCNN language model (Dauphin et al., 2017, "Language Modeling with Gated Convolutional Networks").

Self-contained (torch + transformers only): saved beside models for trust_remote_code.
Each layer is a causal convolution (padded on the left only) followed by a gated linear
unit, h = (X*W + b) * sigmoid(X*V + c). UER-py's names map as: emb_size -> embedding_size,
hidden_size, layers_num -> num_layers, kernel_size, block_size.

Two layouts of the residual connections:
- ``residual_after_first_layer`` (the paper's and UER-py's, what the presets use): the first
  layer maps the embeddings to the hidden width, then a residual joins every ``block_size``
  layers after it; layers that do not fill a last block have none, so any number of layers works.
- otherwise (models saved before it existed): a residual joins every ``block_size`` layers from
  the first, skipped where the width changes; ``num_layers`` must be a multiple of ``block_size``.
``weight_norm`` puts weight normalisation on the convolutions (Dauphin et al.), and
``initialization`` "kaiming" gives the convolutions torch's own (fan-in scaled) initialisation
instead of normal(0, initializer_range).
"""

import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput


class GatedCnnConfig(PretrainedConfig):
    model_type = "gated_cnn"

    # the defaults of the three switches are what models saved before them were built with
    def __init__(self, vocab_size=32768, embedding_size=256, hidden_size=256, num_layers=8, kernel_size=4,
                 block_size=2, dropout=0.1, tie_word_embeddings=False, initializer_range=0.02,
                 residual_after_first_layer=False, weight_norm=False, initialization="normal", **kwargs):
        self.vocab_size, self.embedding_size, self.hidden_size = vocab_size, embedding_size, hidden_size
        self.num_layers, self.kernel_size, self.block_size = num_layers, kernel_size, block_size
        self.dropout, self.initializer_range = dropout, initializer_range
        self.residual_after_first_layer, self.weight_norm = residual_after_first_layer, weight_norm
        self.initialization = initialization
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


class CausalGluConv(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, weight_norm=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(in_channels, 2 * out_channels, kernel_size)
        if weight_norm:
            self.conv = nn.utils.parametrizations.weight_norm(self.conv)

    def forward(self, x):  # x: [batch, channels, time]
        return F.glu(self.conv(F.pad(x, (self.kernel_size - 1, 0))), dim=1)


class GatedCnnPreTrainedModel(PreTrainedModel):
    config_class = GatedCnnConfig
    base_model_prefix = "gated_cnn"

    def _init_weights(self, module):
        if isinstance(module, nn.Conv1d) and self.config.initialization == "kaiming":
            if nn.utils.parametrize.is_parametrized(module, "weight"):
                weight = module.parametrizations.weight
                nn.init.kaiming_uniform_(weight.original1, a=5 ** 0.5)  # direction v; the norm g follows it
                weight.original0.data.copy_(weight.original1.norm(dim=(1, 2), keepdim=True))
            else:
                nn.init.kaiming_uniform_(module.weight, a=5 ** 0.5)
            nn.init.zeros_(module.bias)
            return
        if isinstance(module, nn.Conv1d) and nn.utils.parametrize.is_parametrized(module, "weight"):
            weight = module.parametrizations.weight
            nn.init.normal_(weight.original1, mean=0.0, std=self.config.initializer_range)
            weight.original0.data.copy_(weight.original1.norm(dim=(1, 2), keepdim=True))
            nn.init.zeros_(module.bias)
            return
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        if isinstance(module, (nn.Linear, nn.Conv1d)) and module.bias is not None:
            nn.init.zeros_(module.bias)


class GatedCnnModel(GatedCnnPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.layers = nn.ModuleList(
            CausalGluConv(config.embedding_size if i == 0 else config.hidden_size, config.hidden_size,
                          config.kernel_size, config.weight_norm)
            for i in range(config.num_layers)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, value):
        self.embeddings = value

    def forward(self, input_ids, output_hidden_states=False, **kwargs):
        x = self.dropout(self.embeddings(input_ids)).transpose(1, 2)
        hidden_states, residual = [], None
        block, after_first = self.config.block_size, self.config.residual_after_first_layer
        for i, layer in enumerate(self.layers):
            if after_first:  # blocks start after the first layer: layer i closes one when i % block == 0
                x = self.dropout(layer(x))
                if i > 0 and i % block == 0:
                    x = x + residual
                if i % block == 0:
                    residual = x
            else:
                if i % block == 0:
                    residual = x if x.size(1) == self.config.hidden_size else None
                x = self.dropout(layer(x))
                if (i + 1) % block == 0 and residual is not None:
                    x = x + residual
            if output_hidden_states:
                hidden_states.append(x.transpose(1, 2))
        return BaseModelOutput(last_hidden_state=x.transpose(1, 2),
                               hidden_states=tuple(hidden_states) if output_hidden_states else None)


class GatedCnnForCausalLM(GatedCnnPreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        self.gated_cnn = GatedCnnModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def generate(self, *args, **kwargs):
        kwargs["use_cache"] = False  # no cache: each step runs the (causal) convolutions over the whole prefix
        return super().generate(*args, **kwargs)

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        return {"input_ids": input_ids}

    def forward(self, input_ids, labels=None, output_hidden_states=False, **kwargs):
        outputs = self.gated_cnn(input_ids, output_hidden_states=output_hidden_states)
        logits = self.lm_head(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1))
        return CausalLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
