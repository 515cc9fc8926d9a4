"""RoBERTa (Liu et al. 2019): masked LM alone on packed blocks of full sentences across documents
(no next sentence prediction), masks drawn anew each epoch, whole MeCab words with
--do_whole_word_mask. The final directory is a stock RobertaForMaskedLM; the training forward
runs the output layer at the masked positions only.

RoBERTa numbers positions from the padding id plus one (transformers' RobertaEmbeddings), so the
position table holds the sequence plus those first pad_id + 1 rows, as roberta-base's 514 does.
"""

from .spec import TRANSFORMER_KEYS, Family, check_whole_heads, dropout, mlm_collator, single_model, transformers_class


def config(preset, vocab):
    from transformers import RobertaConfig

    rate = dropout(preset, 0.1)
    return RobertaConfig(
        vocab_size=vocab.size, hidden_size=preset.hidden_size, num_hidden_layers=preset.number_of_layers,
        num_attention_heads=preset.attention_heads, intermediate_size=preset.ffn_inner_hidden_size,
        max_position_embeddings=max(512, preset.sequence_length) + vocab.pad_id + 1, type_vocab_size=1,
        pad_token_id=vocab.pad_id, bos_token_id=vocab.cls_id, eos_token_id=vocab.sep_id, layer_norm_eps=1e-5,
        hidden_dropout_prob=rate, attention_probs_dropout_prob=rate,
    )


def frozen_modules(model, n):
    return [model.roberta.embeddings, *model.roberta.encoder.layer[:n]]


def training_forward(self, batch):
    from .losses import accuracy, masked_rows, sum_ce

    sequence = self.roberta(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], return_dict=False)[0]
    predicted = self.lm_head(masked_rows(sequence, batch))
    return {"mlm": sum_ce(predicted, batch["mlm_labels"]), "acc/mlm": accuracy(predicted, batch["mlm_labels"])}


def flops(model):
    """As BERT's: every body weight sees every token, the output layer the masked ones."""
    from ..flops import masked_tokens, transformer_flops

    return transformer_flops(model, masked_tokens)


create, load = single_model(transformers_class("RobertaForMaskedLM"), config, frozen_modules)

FAMILY = Family(name="roberta", title="RoBERTa", example_kind="packed", make_collator=mlm_collator, create=create,
                load=load, training_forward=training_forward, flops=flops, required_keys=TRANSFORMER_KEYS,
                check=check_whole_heads, auto_class="AutoModelForMaskedLM", pipeline="fill-mask")
