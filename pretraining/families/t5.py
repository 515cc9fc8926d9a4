"""T5 (Raffel et al. 2020) in the v1.1 recipe: span corruption, gated GELU, an untied output
layer, no dropout in pretraining. Its sentinel tokens <extra_id_N> are appended to the
vocabulary where the tokenizer lacks them."""

from ja_common.errors import UserError

from .spec import TRANSFORMER_KEYS, Family, dropout, seq2seq_collator, single_model, transformers_class


def config(preset, vocab):
    from transformers import T5Config

    heads = preset.attention_heads
    return T5Config(
        vocab_size=vocab.size, d_model=preset.hidden_size,
        d_kv=preset.hidden_size // heads if preset.hidden_size % heads == 0 else 64,
        d_ff=preset.ffn_inner_hidden_size, num_layers=preset.number_of_layers,
        num_decoder_layers=preset.number_of_layers, num_heads=heads, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, dropout_rate=dropout(preset, 0.0), pad_token_id=vocab.pad_id,
        eos_token_id=vocab.sep_id, decoder_start_token_id=vocab.pad_id,
    )


def frozen_modules(model, n):
    return [model.shared, *model.encoder.block[:n]]


def sentinels(encoder):
    """T5's <extra_id_N> tokens and their ids (appended to the vocabulary where it lacks them)."""
    from ..data.build import sentinel_ids

    return {f"<extra_id_{k}>": i for k, i in enumerate(sentinel_ids(encoder))}


def check(preset, where):
    """T5 has its own head size (d_kv): heads need not divide the hidden size."""
    from ..data.builders import span_lengths

    _, targets = span_lengths(preset.sequence_length, preset.noise_density, preset.mean_noise_span_length)
    if preset.target_length is not None and preset.target_length != targets:
        raise UserError(f"{where}: \"target-length\" {preset.target_length} disagrees with \"sequence-length\" "
                        f"{preset.sequence_length}: span corruption gives targets of {targets} tokens; drop the key")


def training_forward(self, batch):
    from .losses import linear_cross_entropy

    labels = batch["labels"]
    encoded = self.encoder(input_ids=batch["input_ids"], return_dict=False)[0]
    decoded = self.decoder(input_ids=self.prepare_decoder_input_ids_from_labels(labels=labels),
                           encoder_hidden_states=encoded, return_dict=False)[0]
    # as T5ForConditionalGeneration does: transformers 5.24 names the switch scale_decoder_outputs,
    # earlier releases scaled when the output layer was tied to the embeddings
    if getattr(self.config, "scale_decoder_outputs", self.config.tie_word_embeddings):
        decoded = decoded * (self.config.d_model ** -0.5)
    return {"span": linear_cross_entropy(decoded, self.lm_head.weight, self.lm_head.bias, labels)}


class _Flops:
    """The encoder's weights see the inputs, the decoder's the targets; the decoder attends to
    the targets before it and to every input."""

    def __init__(self, model):
        from ..flops import attention_flops, body_parameters, output_layer_flops

        c = model.config
        self.encoder, self.decoder = body_parameters(model.encoder), body_parameters(model.decoder)
        self.attention = attention_flops(c.num_layers, c.d_model)
        self.head = output_layer_flops(model.get_output_embeddings())

    def __call__(self, batch):
        rows, length = batch["input_ids"].shape
        target_length = batch["labels"].shape[1]
        tokens, targets = rows * length, rows * target_length
        return float(6 * self.encoder * tokens + 6 * self.decoder * targets
                     + self.attention * length * tokens  # encoder self-attention
                     + self.attention * (target_length + length) * targets  # decoder self- and cross-attention
                     + self.head * targets)


create, load = single_model(transformers_class("T5ForConditionalGeneration"), config, frozen_modules)

FAMILY = Family(name="t5", title="T5", example_kind="span", make_collator=seq2seq_collator, create=create, load=load,
                training_forward=training_forward, flops=_Flops, required_keys=TRANSFORMER_KEYS, check=check,
                perplexity=("span",), extra_tokens=sentinels, auto_class="AutoModelForSeq2SeqLM",
                pipeline="text2text-generation")
