"""DeBERTa-v2 (He et al. 2021), as ku-nlp's Japanese models are configured: masked LM alone on
packed blocks, disentangled attention over relative positions in log buckets ("position-buckets",
256) with the key and query projections shared between content and positions, and no absolute
position input. The final directory is a stock DebertaV2ForMaskedLM; the training forward runs
the output layer at the masked positions only.

transformers' DeBERTa-v2 has eager attention only: "attention-implementation" sdpa or flash is
refused with transformers' own message.
"""

from ja_common.errors import UserError

from .spec import TRANSFORMER_KEYS, Family, check_whole_heads, dropout, mlm_collator, single_model, transformers_class


def config(preset, vocab):
    from transformers import DebertaV2Config

    rate = dropout(preset, 0.1)
    return DebertaV2Config(
        vocab_size=vocab.size, hidden_size=preset.hidden_size, num_hidden_layers=preset.number_of_layers,
        num_attention_heads=preset.attention_heads, intermediate_size=preset.ffn_inner_hidden_size,
        max_position_embeddings=max(512, preset.sequence_length), type_vocab_size=0, layer_norm_eps=1e-7,
        relative_attention=True, position_biased_input=False, pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
        position_buckets=preset.position_buckets, share_att_key=True, norm_rel_ebd="layer_norm",
        pad_token_id=vocab.pad_id, bos_token_id=vocab.cls_id, eos_token_id=vocab.sep_id,
        hidden_dropout_prob=rate, attention_probs_dropout_prob=rate, pooler_dropout=0, pooler_hidden_act="gelu",
    )


def check(preset, where):
    check_whole_heads(preset, where)
    if preset.position_buckets < 1:
        raise UserError(f"{where}: \"position-buckets\" must be at least 1")


def frozen_modules(model, n):
    return [model.deberta.embeddings, *model.deberta.encoder.layer[:n]]


def training_forward(self, batch):
    from .losses import accuracy, masked_rows, sum_ce

    sequence = self.deberta(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            return_dict=False)[0]
    predicted = self.cls(masked_rows(sequence, batch))
    return {"mlm": sum_ce(predicted, batch["mlm_labels"]), "acc/mlm": accuracy(predicted, batch["mlm_labels"])}


class DisentangledFlops:
    """BERT's count plus what relative positions add: each layer's content-to-position and
    position-to-content scores against the 2 x span relative keys (2 x 2 x span x hidden per token
    forward, times 3 with the backward), and the projection of the 2 x span relative embeddings
    by the shared query and key weights (once a layer and micro-batch)."""

    def __init__(self, model):
        from ..flops import masked_tokens, transformer_flops

        config = model.config
        span = config.position_buckets if config.position_buckets > 0 else config.max_position_embeddings
        self.dense = transformer_flops(model, masked_tokens)
        self.per_token = 24 * config.num_hidden_layers * span * config.hidden_size
        self.per_batch = 3 * 2 * 2 * (2 * span) * config.hidden_size ** 2 * config.num_hidden_layers

    def __call__(self, batch):
        return self.dense(batch) + self.per_token * batch["input_ids"].numel() + self.per_batch


create, load = single_model(transformers_class("DebertaV2ForMaskedLM"), config, frozen_modules)

FAMILY = Family(name="deberta", title="DeBERTa-v2", example_kind="packed", make_collator=mlm_collator, create=create,
                load=load, training_forward=training_forward, flops=DisentangledFlops, required_keys=TRANSFORMER_KEYS,
                check=check, auto_class="AutoModelForMaskedLM", pipeline="fill-mask")
