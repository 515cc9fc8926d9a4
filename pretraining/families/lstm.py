"""An LSTM language model (UER-py's lstm encoder with the LM target; "cell": "gru" or "rnn" for
its gru and rnn encoders), the model in pretraining/models/lstm.py, saved with its code;
"tie-weights" ties the output layer to the embeddings."""

from ja_common.errors import UserError

from .spec import CAUSAL_LM, OWN_MODEL, Family, check_cell, own_model_config, recurrent_cell, single_model


def _head_class():
    from ..models.lstm import LstmForCausalLM

    return LstmForCausalLM


def config(preset, vocab):
    from ..models.lstm import LstmLmConfig

    return own_model_config(LstmLmConfig, "lstm", preset, vocab, tie_word_embeddings=bool(preset.tie_weights),
                            cell=recurrent_cell(preset))


def frozen_modules(model, n):
    if n > 0:
        raise UserError("flozen-layers: the recurrent layers are one torch module; use 0 (embeddings) or -1 (none)")
    return [model.lstm_lm.embeddings]


def training_forward(self, batch):
    from .losses import linear_cross_entropy

    ids = batch["input_ids"]
    hidden = self.lstm_lm(ids).last_hidden_state
    if self.projection is not None:
        hidden = self.projection(hidden)
    return {"lm": linear_cross_entropy(hidden[:, :-1], self.lm_head.weight, self.lm_head.bias, ids[:, 1:])}


def flops(model):
    """The recurrent weights are used once a token, like dense ones; no attention."""
    from ..flops import DenseFlops, body_parameters, output_layer_flops

    head = model.get_output_embeddings()
    return DenseFlops(body_parameters(model, head), output_layer_flops(head))


create, load = single_model(_head_class, config, frozen_modules)

FAMILY = Family(name="lstm", title="LSTM", create=create, load=load, training_forward=training_forward, flops=flops,
                check=check_cell, **CAUSAL_LM, **OWN_MODEL)
