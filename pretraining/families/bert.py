"""BERT (Devlin et al. 2019): masked LM and next sentence prediction on sentence pairs.

The final directory is a stock BertForPreTraining; the training forward runs the output
layer at the masked positions only.
"""

from .spec import TRANSFORMER_KEYS, Family, check_whole_heads, dropout, mlm_collator, single_model, transformers_class


def config(preset, vocab):
    from transformers import BertConfig

    rate = dropout(preset, 0.1)
    return BertConfig(
        vocab_size=vocab.size, hidden_size=preset.hidden_size, num_hidden_layers=preset.number_of_layers,
        num_attention_heads=preset.attention_heads, intermediate_size=preset.ffn_inner_hidden_size,
        max_position_embeddings=max(512, preset.sequence_length), type_vocab_size=2, pad_token_id=vocab.pad_id,
        hidden_dropout_prob=rate, attention_probs_dropout_prob=rate,
    )


def frozen_modules(model, n):
    return [model.bert.embeddings, *model.bert.encoder.layer[:n]]


def training_forward(self, batch):
    from .losses import accuracy, masked_rows, sum_ce

    sequence, pooled = self.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 token_type_ids=batch["token_type_ids"], return_dict=False)[:2]
    predicted, pair = self.cls.predictions(masked_rows(sequence, batch)), self.cls.seq_relationship(pooled)
    return {"mlm": sum_ce(predicted, batch["mlm_labels"]), "nsp": sum_ce(pair, batch["next_sentence_label"]),
            "acc/mlm": accuracy(predicted, batch["mlm_labels"]), "acc/nsp": accuracy(pair, batch["next_sentence_label"])}


def flops(model):
    """Every body weight sees every token; the output layer only the masked ones."""
    from ..flops import masked_tokens, transformer_flops

    return transformer_flops(model, masked_tokens)


create, load = single_model(transformers_class("BertForPreTraining"), config, frozen_modules)

FAMILY = Family(name="bert", title="BERT", example_kind="nsp", make_collator=mlm_collator, create=create, load=load,
                training_forward=training_forward, flops=flops, required_keys=TRANSFORMER_KEYS, check=check_whole_heads,
                auto_class="AutoModelForPreTraining", pipeline="fill-mask")
