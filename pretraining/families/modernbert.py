"""ModernBERT (Warner et al. 2024; sbintuitions' and llm-jp's Japanese models): masked LM alone on
packed blocks, rotary positions, every "global-attention-every"-th layer attending to the whole
sequence (rotary base "rope-theta", 160,000) and the others to a sliding window of
"local-attention" tokens (base "local-rope-theta", 10,000), GeGLU feed-forward, no biases,
sequences up to 8,192 tokens; its recipe masks 30% ("mask-percent"). The final directory is a
stock ModernBertForMaskedLM; the training forward runs the head and output layer at the masked
positions only (the stock model's "sparse_prediction", without its device sync).

AutoTokenizer does not load a WordPiece tokenizer from a ModernBERT directory: transformers 5
gives the "modernbert" model type its generic fast tokenizer whatever tokenizer_config.json
names, so the model card names BertJapaneseTokenizer (tests/test_pretraining.py checks both).
"""

from ja_common.errors import UserError

from .spec import TRANSFORMER_KEYS, Family, check_whole_heads, dropout, mlm_collator, single_model, transformers_class

ROPE_THETA = 160000.0  # the global layers' rotary base when the preset gives no "rope-theta"
MAX_LENGTH = 8192


def config(preset, vocab):
    from transformers import ModernBertConfig

    rate = dropout(preset, 0.0)
    layer_types = ["sliding_attention" if layer % preset.global_attention_every else "full_attention"
                   for layer in range(preset.number_of_layers)]
    return ModernBertConfig(
        vocab_size=vocab.size, hidden_size=preset.hidden_size, num_hidden_layers=preset.number_of_layers,
        num_attention_heads=preset.attention_heads, intermediate_size=preset.ffn_inner_hidden_size,
        max_position_embeddings=max(MAX_LENGTH, preset.sequence_length), layer_types=layer_types,
        local_attention=preset.local_attention,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": preset.rope_theta or ROPE_THETA},
                         "sliding_attention": {"rope_type": "default", "rope_theta": preset.local_rope_theta}},
        attention_dropout=rate, embedding_dropout=rate, mlp_dropout=rate,
        pad_token_id=vocab.pad_id, bos_token_id=vocab.cls_id, eos_token_id=vocab.sep_id, cls_token_id=vocab.cls_id,
        sep_token_id=vocab.sep_id,
    )


def check(preset, where):
    check_whole_heads(preset, where)
    if preset.local_attention < 2 or preset.local_attention % 2:
        raise UserError(f"{where}: \"local-attention\" (the window, in tokens) must be an even number, at least 2")
    if preset.global_attention_every < 1:
        raise UserError(f"{where}: \"global-attention-every\" must be at least 1 (1: every layer is global)")
    if (preset.rope_theta is not None and preset.rope_theta <= 0) or preset.local_rope_theta <= 0:
        raise UserError(f"{where}: \"rope-theta\" and \"local-rope-theta\" must be positive")


def frozen_modules(model, n):
    return [model.model.embeddings, *model.model.layers[:n]]


def training_forward(self, batch):
    from .losses import accuracy, masked_rows, sum_ce

    sequence = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], return_dict=False)[0]
    predicted = self.decoder(self.head(masked_rows(sequence, batch)))
    return {"mlm": sum_ce(predicted, batch["mlm_labels"]), "acc/mlm": accuracy(predicted, batch["mlm_labels"])}


class WindowedFlops:
    """BERT's count, with attention charged for the positions each layer sees: the whole sequence
    in the global layers, the window (at most) in the local ones."""

    def __init__(self, model):
        from ..flops import DenseFlops, body_parameters, masked_tokens, output_layer_flops

        head, config = model.get_output_embeddings(), model.config
        self.dense = DenseFlops(body_parameters(model, head), output_layer_flops(head), 0, masked_tokens)
        self.global_layers = config.layer_types.count("full_attention")
        self.local_layers = len(config.layer_types) - self.global_layers
        self.hidden, self.window = config.hidden_size, config.local_attention + 1

    def __call__(self, batch):
        from ..flops import attention_flops

        rows, length = batch["input_ids"].shape
        seen = (attention_flops(self.global_layers, self.hidden) * length
                + attention_flops(self.local_layers, self.hidden) * min(length, self.window))
        return self.dense(batch) + float(seen * rows * length)


create, load = single_model(transformers_class("ModernBertForMaskedLM"), config, frozen_modules)

FAMILY = Family(name="modernbert", title="ModernBERT", example_kind="packed", make_collator=mlm_collator,
                create=create, load=load, training_forward=training_forward, flops=WindowedFlops,
                required_keys=TRANSFORMER_KEYS, check=check, auto_class="AutoModelForMaskedLM", pipeline="fill-mask",
                usage=("```python", "from transformers import AutoModelForMaskedLM, BertJapaneseTokenizer, pipeline",
                       "model = AutoModelForMaskedLM.from_pretrained(path)",
                       "# transformers 5 loads ModernBERT directories with its own fast tokenizer class, whatever",
                       "# tokenizer_config.json says: name the MeCab tokenizer's class (a BPE tokenizer loads with",
                       "# AutoTokenizer.from_pretrained(path, trust_remote_code=True))",
                       "tokenizer = BertJapaneseTokenizer.from_pretrained(path)",
                       "fill = pipeline(\"fill-mask\", model=model, tokenizer=tokenizer)", "```"))
