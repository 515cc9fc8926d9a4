"""GPT-2 (Radford et al. 2019): a causal language model on packed blocks, trained with the
chunked output-layer loss."""

from .spec import CAUSAL_LM, TRANSFORMER_KEYS, Family, check_whole_heads, dropout, single_model, transformers_class


def config(preset, vocab):
    from transformers import GPT2Config

    rate = dropout(preset, 0.1)
    return GPT2Config(
        vocab_size=vocab.size, n_positions=preset.sequence_length, n_embd=preset.hidden_size,
        n_layer=preset.number_of_layers, n_head=preset.attention_heads, n_inner=preset.ffn_inner_hidden_size,
        resid_pdrop=rate, embd_pdrop=rate, attn_pdrop=rate,
        bos_token_id=vocab.cls_id, eos_token_id=vocab.sep_id, pad_token_id=vocab.pad_id,
    )


def frozen_modules(model, n):
    return [model.transformer.wte, model.transformer.wpe, *model.transformer.h[:n]]


def training_forward(self, batch):
    from .losses import linear_cross_entropy

    ids = batch["input_ids"]
    hidden = self.transformer(input_ids=ids, return_dict=False)[0]
    return {"lm": linear_cross_entropy(hidden[:, :-1], self.lm_head.weight, None, ids[:, 1:])}


def flops(model):
    from ..flops import transformer_flops

    return transformer_flops(model)


create, load = single_model(transformers_class("GPT2LMHeadModel"), config, frozen_modules)

FAMILY = Family(name="gpt2", title="GPT-2", create=create, load=load, training_forward=training_forward, flops=flops,
                required_keys=TRANSFORMER_KEYS, check=check_whole_heads, **CAUSAL_LM)
