"""Model families: one Family spec each, the single place that says what a family is.

A spec says how a preset becomes a model, which examples and collator feed it, how its
losses are counted and weighted, which preset keys it needs and checks, what it adds to the
vocabulary and the tokenizer, what it saves and how the result loads. presets.py, train.py,
evaluate.py and the model card read the spec; none of them names a family.

Adding a family:
1. its model file: a transformers class, or a self-contained Hugging Face model in
   pretraining/models/ (registered with the Auto classes in pretraining/models/__init__.py);
2. its training forward in objectives.py (losses as (sum, count) per objective), unless the
   model's own forward returns them;
3. one Family entry in FAMILIES below (its name is then a valid "family" in parameter.json);
4. a tiny preset in tests/test_pretraining.py's family test.

Losses are returned as (sum, count) per objective, so the training loop can divide by
the count over the whole global batch: the update is then the one a single process
would make, whatever the number of ranks and their batch sizes.
"""

from dataclasses import dataclass
from typing import Callable

from ja_common.errors import UserError

from .build import sentinel_ids

# Imports stay light (no torch): presets.py reads this registry to parse parameter.json, and
# --prepare_only runs without torch. Forwards are named, collators made, models built lazily.


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
    example_kind: str  # nsp, sop, packed or span (pretraining/examples.py)
    auto_class: str  # the transformers Auto class that loads the final directory (None: see parts)
    build_config: Callable  # (preset, vocab) -> config
    model_class: Callable  # () -> the transformers class
    make_collator: Callable  # (preset, vocab, seed, whole_word) -> collator
    # the training forward: a function's name in objectives.py (or the function), (model, batch) ->
    # {name: (sum, count)}, installed as the model's forward for training (objectives.install);
    # names "acc/..." are logged, not trained on. None: the model's own forward.
    objective: object
    frozen_modules: Callable = None  # (model, n_layers) -> modules to freeze
    create: Callable = None  # (preset, vocab) -> model, for families that do not fit the one-config path
    load: Callable = None  # (model_dir) -> the trained model, where from_pretrained does not do
    loss_weights: Callable = lambda preset: {}  # name -> weight (default 1)
    transformer: bool = True  # attention: needs "ffn-inner-hidden-size" and "attention-heads"
    check: Callable = lambda preset, where: None  # raises UserError for the family's own keys
    extra_tokens: Callable = None  # (encoder) -> tokens the model adds to the vocabulary, with their ids
    parts: tuple = ()  # sub-models saved in folders of their own, each with the tokenizer
    pipeline: str = None  # the Hub's pipeline tag of the final model
    remote_code: bool = False  # the saved model carries its code: loads with trust_remote_code=True

    @property
    def training_forward(self):
        if isinstance(self.objective, str):
            from . import objectives

            return getattr(objectives, self.objective)
        return self.objective


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
    from .collators import MaskedLMCollator

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


def _t5_sentinels(encoder):
    """T5's <extra_id_N> tokens and their ids (appended to the vocabulary where it lacks them)."""
    return {f"<extra_id_{k}>": i for k, i in enumerate(sentinel_ids(encoder))}


def _t5_check(preset, where):
    from .examples import span_lengths

    _, targets = span_lengths(preset.sequence_length, preset.noise_density, preset.mean_noise_span_length)
    if preset.target_length is not None and preset.target_length != targets:
        raise UserError(f"{where}: \"target-length\" {preset.target_length} disagrees with \"sequence-length\" "
                        f"{preset.sequence_length}: span corruption gives targets of {targets} tokens; drop the key")


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


def _gatedcnn_check(preset, where):
    for key, value in (("kernel-size", preset.kernel_size), ("block-size", preset.block_size)):
        if value is not None and value < 1:
            raise UserError(f"{where}: \"{key}\" must be at least 1, not {value}")
    if preset.initialization not in ("normal", "kaiming"):
        raise UserError(f"{where}: \"initialization\" must be \"normal\" or \"kaiming\", not {preset.initialization!r}")


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
        from . import electra

        return getattr(electra, name)(*args)

    return call


def _electra_check(preset, where):
    from .electra import generator_sizes

    generator_sizes(preset)  # a generator without a whole attention head is refused here, before any work
    if not 0 < preset.mask_percent < 100:
        raise UserError(f"{where}: \"mask-percent\" must be between 0 and 100")


def _causal_collator(*args):
    from .collators import CausalLMCollator

    return CausalLMCollator()


def _seq2seq_collator(*args):
    from .collators import Seq2SeqCollator

    return Seq2SeqCollator()


_causal = dict(example_kind="packed", auto_class="AutoModelForCausalLM", make_collator=_causal_collator,
               pipeline="text-generation")
_own_code = dict(transformer=False, remote_code=True)

FAMILIES = {
    "bert": Family("bert", "nsp", "AutoModelForPreTraining", _bert_config, _transformers("BertForPreTraining"),
                   _mlm_collator, "bert_forward", _bert_frozen, pipeline="fill-mask"),
    "albert": Family("albert", "sop", "AutoModelForPreTraining", _albert_config, _transformers("AlbertForPreTraining"),
                     _mlm_collator, "albert_forward", _albert_frozen, pipeline="fill-mask"),
    "electra": Family("electra", "packed", None, None, None, _mlm_collator, None,
                      create=_electra("create_electra"), load=_electra("load_electra"),
                      loss_weights=lambda preset: {"discriminator": preset.discriminator_weight},
                      check=_electra_check, parts=("generator", "discriminator")),
    "gpt2": Family("gpt2", build_config=_gpt2_config, model_class=_transformers("GPT2LMHeadModel"),
                   objective="gpt2_forward", frozen_modules=_gpt2_frozen, **_causal),
    "t5": Family("t5", "span", "AutoModelForSeq2SeqLM", _t5_config, _transformers("T5ForConditionalGeneration"),
                 _seq2seq_collator, "t5_forward", _t5_frozen, check=_t5_check,
                 extra_tokens=_t5_sentinels, pipeline="text2text-generation"),
    "gatedcnn": Family("gatedcnn", build_config=_recurrent_config("gatedcnn"), model_class=_head("gatedcnn"),
                       objective="gatedcnn_forward", frozen_modules=_gatedcnn_frozen,
                       check=_gatedcnn_check, **_causal, **_own_code),
    "lstm": Family("lstm", build_config=_recurrent_config("lstm"), model_class=_head("lstm"),
                   objective="lstm_forward", frozen_modules=_lstm_frozen, **_causal, **_own_code),
    "elmo": Family("elmo", "packed", "AutoModelForPreTraining", _recurrent_config("elmo"), _head("elmo"),
                   _causal_collator, "elmo_forward", _elmo_frozen,
                   loss_weights=lambda preset: {"forward": 0.5, "backward": 0.5}, **_own_code),
}


def family_of(preset):
    if preset.family not in FAMILIES:
        raise UserError(f"parameter.json '{preset.model_type}': the {preset.family} family cannot be trained yet "
                        f"(available: {', '.join(FAMILIES)})")
    return FAMILIES[preset.family]


def vocabulary_for(preset, encoder):
    ids = {t: encoder.token_id(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")}
    extra = family_of(preset).extra_tokens
    size = max([encoder.vocab_size] + [i + 1 for i in (extra(encoder).values() if extra else [])])
    return Vocabulary(size, ids["[PAD]"], ids["[CLS]"], ids["[SEP]"], ids["[MASK]"])
