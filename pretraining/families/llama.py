"""Llama (Touvron et al. 2023), the architecture of llm-jp-3 and Swallow: a causal language model
with rotary positions ("rope-theta"), RMSNorm, a SwiGLU feed-forward and grouped-query attention
("key-value-heads", default: as many as "attention-heads"), the output layer tied to the
embeddings with "tie-weights". Trained on packed blocks with the chunked output-layer loss; the
final directory is a stock LlamaForCausalLM.
"""

from ja_common.errors import UserError

from .spec import CAUSAL_LM, TRANSFORMER_KEYS, Family, check_whole_heads, dropout, single_model, transformers_class

ROPE_THETA = 10000.0  # "rope-theta" when the preset has none


def config(preset, vocab):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab.size, hidden_size=preset.hidden_size, intermediate_size=preset.ffn_inner_hidden_size,
        num_hidden_layers=preset.number_of_layers, num_attention_heads=preset.attention_heads,
        num_key_value_heads=preset.key_value_heads or preset.attention_heads,
        max_position_embeddings=preset.sequence_length, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": preset.rope_theta or ROPE_THETA},
        tie_word_embeddings=bool(preset.tie_weights), attention_dropout=dropout(preset, 0.0),
        bos_token_id=vocab.cls_id, eos_token_id=vocab.sep_id, pad_token_id=vocab.pad_id,
    )


def check(preset, where):
    check_whole_heads(preset, where)
    groups = preset.key_value_heads
    if groups is not None and (groups < 1 or preset.attention_heads % groups):
        raise UserError(f"{where}: \"key-value-heads\" {groups} must divide \"attention-heads\" {preset.attention_heads}")
    if preset.rope_theta is not None and preset.rope_theta <= 0:
        raise UserError(f"{where}: \"rope-theta\" must be positive")


def frozen_modules(model, n):
    return [model.model.embed_tokens, *model.model.layers[:n]]


def training_forward(self, batch):
    from .losses import linear_cross_entropy

    ids = batch["input_ids"]
    hidden = self.model(input_ids=ids, return_dict=False)[0]
    return {"lm": linear_cross_entropy(hidden[:, :-1], self.lm_head.weight, None, ids[:, 1:])}


def flops(model):
    """The grouped key and value projections are smaller weights (counted as such); the scores
    and weighted values still cost 12 x layers x hidden per token and position."""
    from ..flops import transformer_flops

    return transformer_flops(model)


create, load = single_model(transformers_class("LlamaForCausalLM"), config, frozen_modules)

FAMILY = Family(name="llama", title="Llama", create=create, load=load, training_forward=training_forward, flops=flops,
                required_keys=TRANSFORMER_KEYS, check=check, **CAUSAL_LM)
