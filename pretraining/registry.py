"""Model families: how a preset becomes a model, which collator feeds it, how its loss is counted.

Adding a family means adding one Family entry here (and its example kind in presets.py).
Losses are returned as (sum, count) per objective, so the training loop can divide by
the count over the whole global batch: the update is then the one a single process
would make, whatever the number of ranks and their batch sizes. The training forward of
each family (what computes them) is in objectives.py.
"""

from dataclasses import dataclass
from typing import Callable

from tokenizer.errors import UserError

from . import objectives
from .collators import CausalLMCollator, MaskedLMCollator, Seq2SeqCollator
from .data import sentinel_ids


@dataclass
class Vocabulary:
    size: int  # the model's embedding rows (T5: the tokenizer plus its sentinels)
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int


@dataclass
class Family:
    name: str
    auto_class: str  # the transformers Auto class that loads the final directory
    build_config: Callable
    model_class: Callable  # () -> the transformers class
    make_collator: Callable  # (preset, vocab, seed, whole_word) -> collator
    # (model, batch) -> {name: (sum, count)}, installed as the model's forward for training
    # (objectives.install); names "acc/..." are logged, not trained on. None: the model's own forward.
    training_forward: Callable
    frozen_modules: Callable = None  # (model, n_layers) -> modules to freeze
    create: Callable = None  # (preset, vocab) -> model, for families that do not fit the one-config path
    loss_weights: Callable = lambda preset: {}  # name -> weight (default 1)


def _dropout(preset, default):
    return default if preset.dropout is None else preset.dropout


# ---- BERT and ALBERT ----

def _bert_config(preset, vocab):
    from transformers import BertConfig

    dropout = _dropout(preset, 0.1)
    return BertConfig(
        vocab_size=vocab.size, hidden_size=preset.hidden_size, num_hidden_layers=preset.number_of_layers,
        num_attention_heads=preset.attention_heads, intermediate_size=preset.ffn_inner_hidden_size,
        max_position_embeddings=max(512, preset.sequence_length), type_vocab_size=2, pad_token_id=vocab.pad_id,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )


def _albert_config(preset, vocab):
    from transformers import AlbertConfig

    dropout = _dropout(preset, 0.0)
    return AlbertConfig(
        vocab_size=vocab.size, embedding_size=preset.embedding_size or 128, hidden_size=preset.hidden_size,
        num_hidden_layers=preset.number_of_layers, num_attention_heads=preset.attention_heads,
        intermediate_size=preset.ffn_inner_hidden_size, max_position_embeddings=max(512, preset.sequence_length),
        type_vocab_size=2, pad_token_id=vocab.pad_id, bos_token_id=vocab.cls_id, eos_token_id=vocab.sep_id,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )


def _mlm_collator(preset, vocab, seed, whole_word):
    return MaskedLMCollator(vocab.mask_id, vocab.pad_id, vocab.size, seed,
                            mask_prob=preset.mask_percent / 100, whole_word=whole_word)


def _bert_frozen(model, n):
    return [model.bert.embeddings, *model.bert.encoder.layer[:n]]


def _albert_frozen(model, n):
    if n > 0:
        raise UserError("flozen-layers: ALBERT shares one layer across its depth; use 0 (embeddings) or -1 (none)")
    return [model.albert.embeddings]


# ---- GPT-2 ----

def _gpt2_config(preset, vocab):
    from transformers import GPT2Config

    dropout = _dropout(preset, 0.1)
    return GPT2Config(
        vocab_size=vocab.size, n_positions=preset.sequence_length, n_embd=preset.hidden_size,
        n_layer=preset.number_of_layers, n_head=preset.attention_heads, n_inner=preset.ffn_inner_hidden_size,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        bos_token_id=vocab.cls_id, eos_token_id=vocab.sep_id, pad_token_id=vocab.pad_id,
    )


def _gpt2_frozen(model, n):
    return [model.transformer.wte, model.transformer.wpe, *model.transformer.h[:n]]


# ---- T5 (v1.1 recipe: gated GELU, untied output layer, no dropout in pretraining) ----

def _t5_config(preset, vocab):
    from transformers import T5Config

    heads = preset.attention_heads
    return T5Config(
        vocab_size=vocab.size, d_model=preset.hidden_size,
        d_kv=preset.hidden_size // heads if preset.hidden_size % heads == 0 else 64,
        d_ff=preset.ffn_inner_hidden_size, num_layers=preset.number_of_layers,
        num_decoder_layers=preset.number_of_layers, num_heads=heads, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, dropout_rate=_dropout(preset, 0.0), pad_token_id=vocab.pad_id,
        eos_token_id=vocab.sep_id, decoder_start_token_id=vocab.pad_id,
    )


def _t5_frozen(model, n):
    return [model.shared, *model.encoder.block[:n]]


def _transformers(name):
    def load():
        import transformers

        return getattr(transformers, name)

    return load


# ---- GatedCNN, LSTM, ELMo (pretraining/models/) ----

def _models():
    from . import models

    return models


def _recurrent_config(family):
    def build(preset, vocab):
        models = _models()
        config_class = models.FAMILY_CLASSES[family][0]
        sizes = dict(vocab_size=vocab.size, embedding_size=preset.embedding_size or preset.hidden_size,
                     hidden_size=preset.hidden_size, num_layers=preset.number_of_layers,
                     dropout=_dropout(preset, 0.1), pad_token_id=vocab.pad_id, bos_token_id=vocab.cls_id,
                     eos_token_id=vocab.sep_id)
        if family == "gatedcnn":
            sizes.update(kernel_size=preset.kernel_size or 4, block_size=preset.block_size or 1,
                         residual_after_first_layer=True, weight_norm=preset.weight_norm,
                         initialization=preset.initialization)
        elif family == "lstm":
            sizes.update(tie_word_embeddings=bool(preset.tie_weights))
        else:
            sizes.update(projection_size=preset.projection_size or preset.embedding_size or preset.hidden_size)
        config = config_class(**sizes)
        models.add_base_model_to_auto_map(config, family)
        return config

    return build


def _head(family):
    return lambda: _models().FAMILY_CLASSES[family][2]


def _gatedcnn_frozen(model, n):
    return [model.gated_cnn.embeddings, *model.gated_cnn.layers[:n]]


def _lstm_frozen(model, n):
    if n > 0:
        raise UserError("flozen-layers: the LSTM's layers are one torch module; use 0 (embeddings) or -1 (none)")
    return [model.lstm_lm.embeddings]


def _elmo_frozen(model, n):
    elmo = model.elmo
    return [elmo.embeddings, elmo.token_projection, *elmo.forward_stack.cells[:n], *elmo.forward_stack.projections[:n],
            *elmo.backward_stack.cells[:n], *elmo.backward_stack.projections[:n]]


def _electra(name):
    def call(*args):
        from electra import model

        return getattr(model, name)(*args)

    return call


FAMILIES = {
    "bert": Family("bert", "AutoModelForPreTraining", _bert_config, _transformers("BertForPreTraining"),
                   _mlm_collator, objectives.bert_forward, _bert_frozen),
    "albert": Family("albert", "AutoModelForPreTraining", _albert_config,
                     _transformers("AlbertForPreTraining"), _mlm_collator,
                     objectives.albert_forward, _albert_frozen),
    "gpt2": Family("gpt2", "AutoModelForCausalLM", _gpt2_config, _transformers("GPT2LMHeadModel"),
                   lambda *a: CausalLMCollator(), objectives.gpt2_forward, _gpt2_frozen),
    "t5": Family("t5", "AutoModelForSeq2SeqLM", _t5_config,
                 _transformers("T5ForConditionalGeneration"), lambda *a: Seq2SeqCollator(), objectives.t5_forward,
                 _t5_frozen),
    "gatedcnn": Family("gatedcnn", "AutoModelForCausalLM", _recurrent_config("gatedcnn"), _head("gatedcnn"),
                       lambda *a: CausalLMCollator(), objectives.gatedcnn_forward, _gatedcnn_frozen),
    "lstm": Family("lstm", "AutoModelForCausalLM", _recurrent_config("lstm"), _head("lstm"),
                   lambda *a: CausalLMCollator(), objectives.lstm_forward, _lstm_frozen),
    "elmo": Family("elmo", "AutoModelForPreTraining", _recurrent_config("elmo"), _head("elmo"),
                   lambda *a: CausalLMCollator(), objectives.elmo_forward, _elmo_frozen,
                   loss_weights=lambda preset: {"forward": 0.5, "backward": 0.5}),
    "electra": Family("electra", "AutoModelForPreTraining", None, None, _mlm_collator, None,
                      create=_electra("create_electra"),
                      loss_weights=lambda preset: {"discriminator": preset.discriminator_weight}),
}


ATTENTION_FAMILIES = ("bert", "albert", "gpt2", "t5", "electra")


def family_of(preset):
    if preset.family not in FAMILIES:
        raise UserError(f"parameter.json '{preset.model_type}': the {preset.family} family cannot be trained yet "
                        f"(available: {', '.join(FAMILIES)})")
    return FAMILIES[preset.family]


def vocabulary_for(preset, encoder):
    ids = {t: encoder.token_id(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")}
    size = encoder.vocab_size
    if preset.family == "t5":
        size = max(size, max(sentinel_ids(encoder)) + 1)
    return Vocabulary(size, ids["[PAD]"], ids["[CLS]"], ids["[SEP]"], ids["[MASK]"])
