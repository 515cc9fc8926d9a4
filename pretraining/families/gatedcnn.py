"""GatedCNN (Dauphin et al. 2017) in UER-py's layout: a causal language model of gated
convolutions, the model in pretraining/models/gated_cnn.py, saved with its code."""

from ja_common.errors import UserError

from .spec import CAUSAL_LM, OWN_MODEL, Family, own_model_config, single_model


def _head_class():
    from ..models.gated_cnn import GatedCnnForCausalLM

    return GatedCnnForCausalLM


def config(preset, vocab):
    from ..models.gated_cnn import GatedCnnConfig

    return own_model_config(GatedCnnConfig, "gatedcnn", preset, vocab, kernel_size=preset.kernel_size or 4,
                            block_size=preset.block_size or 1, residual_after_first_layer=True,
                            weight_norm=preset.weight_norm, initialization=preset.initialization)


def frozen_modules(model, n):
    return [model.gated_cnn.embeddings, *model.gated_cnn.layers[:n]]


def check(preset, where):
    for key, value in (("kernel-size", preset.kernel_size), ("block-size", preset.block_size)):
        if value is not None and value < 1:
            raise UserError(f"{where}: \"{key}\" must be at least 1, not {value}")
    if preset.initialization not in ("normal", "kaiming"):
        raise UserError(f"{where}: \"initialization\" must be \"normal\" or \"kaiming\", not {preset.initialization!r}")


def training_forward(self, batch):
    from .losses import linear_cross_entropy

    ids = batch["input_ids"]
    hidden = self.gated_cnn(ids).last_hidden_state
    return {"lm": linear_cross_entropy(hidden[:, :-1], self.lm_head.weight, self.lm_head.bias, ids[:, 1:])}


def flops(model):
    """Every convolution weight sees every token (kernel taps are weights too); no attention."""
    from ..flops import DenseFlops, body_parameters, output_layer_flops

    head = model.get_output_embeddings()
    return DenseFlops(body_parameters(model, head), output_layer_flops(head))


create, load = single_model(_head_class, config, frozen_modules)

FAMILY = Family(name="gatedcnn", title="GatedCNN", create=create, load=load, training_forward=training_forward,
                flops=flops, check=check, **CAUSAL_LM, **OWN_MODEL)
