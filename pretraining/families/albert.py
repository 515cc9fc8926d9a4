"""ALBERT (Lan et al. 2020): masked LM and sentence order prediction, one layer shared across
the depth, a factorised embedding ("embedding-size", default 128)."""

from ja_common.errors import UserError

from .spec import TRANSFORMER_KEYS, Family, check_whole_heads, dropout, mlm_collator, single_model, transformers_class


def config(preset, vocab):
    from transformers import AlbertConfig

    rate = dropout(preset, 0.0)
    return AlbertConfig(
        vocab_size=vocab.size, embedding_size=preset.embedding_size or 128, hidden_size=preset.hidden_size,
        num_hidden_layers=preset.number_of_layers, num_attention_heads=preset.attention_heads,
        intermediate_size=preset.ffn_inner_hidden_size, max_position_embeddings=max(512, preset.sequence_length),
        type_vocab_size=2, pad_token_id=vocab.pad_id, bos_token_id=vocab.cls_id, eos_token_id=vocab.sep_id,
        hidden_dropout_prob=rate, attention_probs_dropout_prob=rate,
    )


def frozen_modules(model, n):
    if n > 0:
        raise UserError("flozen-layers: ALBERT shares one layer across its depth; use 0 (embeddings) or -1 (none)")
    return [model.albert.embeddings]


def training_forward(self, batch):
    from .losses import accuracy, masked_rows, sum_ce

    sequence, pooled = self.albert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                   token_type_ids=batch["token_type_ids"], return_dict=False)[:2]
    predicted, pair = self.predictions(masked_rows(sequence, batch)), self.sop_classifier(pooled)
    return {"mlm": sum_ce(predicted, batch["mlm_labels"]), "sop": sum_ce(pair, batch["sentence_order_label"]),
            "acc/mlm": accuracy(predicted, batch["mlm_labels"]), "acc/sop": accuracy(pair, batch["sentence_order_label"])}


def flops(model):
    """As BERT's, with the one shared layer's weights counted at every depth."""
    from ..flops import DenseFlops, attention_flops, body_parameters, masked_tokens, output_layer_flops, parameters

    head, c = model.get_output_embeddings(), model.config
    body = body_parameters(model, head) + parameters(model.albert.encoder.albert_layer_groups) * (c.num_hidden_layers - 1)
    return DenseFlops(body, output_layer_flops(head), attention_flops(c.num_hidden_layers, c.hidden_size),
                      masked_tokens)


create, load = single_model(transformers_class("AlbertForPreTraining"), config, frozen_modules)

FAMILY = Family(name="albert", title="ALBERT", example_kind="sop", make_collator=mlm_collator, create=create,
                load=load, training_forward=training_forward, flops=flops, required_keys=TRANSFORMER_KEYS,
                check=check_whole_heads, auto_class="AutoModelForPreTraining", pipeline="fill-mask")
