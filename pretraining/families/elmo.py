"""ELMo (Peters et al. 2018): a forward and a backward LSTM language model with separate
stacks and a shared softmax, the model in pretraining/models/elmo.py, saved with its code.
The two directions' losses are averaged. "cell": "gru" or "rnn" gives UER-py's bigru and birnn."""

from .spec import OWN_MODEL, Family, causal_collator, check_cell, own_model_config, recurrent_cell, single_model


def _head_class():
    from ..models.elmo import ElmoForPreTraining

    return ElmoForPreTraining


def config(preset, vocab):
    from ..models.elmo import ElmoConfig

    return own_model_config(ElmoConfig, "elmo", preset, vocab,
                            projection_size=preset.projection_size or preset.embedding_size or preset.hidden_size,
                            cell=recurrent_cell(preset))


def frozen_modules(model, n):
    elmo = model.elmo
    return [elmo.embeddings, elmo.token_projection, *elmo.forward_stack.cells[:n], *elmo.forward_stack.projections[:n],
            *elmo.backward_stack.cells[:n], *elmo.backward_stack.projections[:n]]


def training_forward(self, batch):
    from .losses import linear_cross_entropy

    ids = batch["input_ids"]
    outputs = self.elmo(ids)
    forward = self.elmo.dropout(outputs.forward_states[-1])
    backward = self.elmo.dropout(outputs.backward_states[-1])
    weight, bias = self.softmax.weight, self.softmax.bias
    return {"forward": linear_cross_entropy(forward[:, :-1], weight, bias, ids[:, 1:]),
            "backward": linear_cross_entropy(backward[:, 1:], weight, bias, ids[:, :-1])}


def flops(model):
    """Each direction's stack sees every token; the shared softmax predicts every token twice."""
    from ..flops import DenseFlops, body_parameters, output_layer_flops

    head = model.get_output_embeddings()
    return DenseFlops(body_parameters(model, head), output_layer_flops(head, directions=2))


create, load = single_model(_head_class, config, frozen_modules)

FAMILY = Family(name="elmo", title="ELMo", example_kind="packed", make_collator=causal_collator, create=create,
                load=load, training_forward=training_forward, flops=flops, check=check_cell,
                loss_weights=lambda preset: {"forward": 0.5, "backward": 0.5}, perplexity=("forward", "backward"),
                auto_class="AutoModelForPreTraining", **OWN_MODEL)
