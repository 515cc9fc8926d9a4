"""Model FLOPs of a training step and model FLOPs utilisation (MFU).

The count is the usual one (Kaplan et al. 2020; PaLM, appendix B; nanoGPT's estimate_mfu):
a weight used once per token costs 2 FLOPs forward and 4 backward, so

    flops = 6 * N_body * tokens                      every weight outside the embeddings and the output layer
          + 12 * layers * hidden * length * tokens    attention scores and weighted values (transformers only)
          + 6 * hidden_out * vocab * predictions      the output layer, at the positions that are predicted

where ``predictions`` is every token for language models and the masked tokens for MLM (whose
output layer runs only there, see objectives.py). Embedding lookups cost no FLOPs. For T5 the
encoder's weights see the inputs and the decoder's the targets. MFU is achieved FLOPs per second
over the device's peak: from ``--peak_tflops``, else from PEAK_TFLOPS for known GPUs.
"""

import torch
from torch import nn

# dense bf16/fp16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name()
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 125.0,
               "A6000": 155.0, "V100": 125.0, "T4": 65.0, "4090": 165.0, "3090": 71.0}


def device_peak_tflops(override=None):
    """The peak to divide by, or None where it is unknown (the CPU, an unlisted GPU)."""
    if override:
        return override
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, value in PEAK_TFLOPS.items():
            if key in name:
                return value
    return None


def _parameters(module):
    return sum(p.numel() for p in module.parameters())


def _body_parameters(module, head=None):
    """Parameters outside the embedding tables (lookups) and the output layer ``head``."""
    skip = {id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    skip |= {id(p) for p in head.parameters()} if head is not None else set()
    return sum(p.numel() for p in module.parameters() if id(p) not in skip)


class FlopCounter:
    """Model FLOPs of one micro-batch, from its shapes."""

    def __init__(self, family, model):
        self.family = family
        if family == "electra":
            head = model.generator.generator_lm_head
            configs = [model.generator.config, model.discriminator.config]
            self.body = _body_parameters(model, head)
            self.attention = 12 * sum(c.num_hidden_layers * c.hidden_size for c in configs)
        else:
            head = model.get_output_embeddings()
            config = model.config
            self.body = _body_parameters(model, head)
            layers = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", 0)
            hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", 0)
            self.attention = 12 * layers * hidden if family in ("bert", "albert", "gpt2", "t5") else 0
            if family == "albert":  # one layer's weights, used at every depth
                self.body += _parameters(model.albert.encoder.albert_layer_groups) * (layers - 1)
            if family == "t5":  # the encoder's weights see the inputs, the decoder's the targets
                self.encoder_body = _body_parameters(model.encoder)
                self.decoder_body = _body_parameters(model.decoder)
        vocab, width = head.weight.shape
        self.head = 6 * width * vocab * (2 if family == "elmo" else 1)  # ELMo predicts in both directions

    def step_flops(self, batch):
        """FLOPs of one micro-batch (a float: counted from the batch's shapes, no device sync)."""
        rows, length = batch["input_ids"].shape
        tokens = rows * length
        if self.family == "t5":
            target_length = batch["labels"].shape[1]
            targets = rows * target_length
            return float(6 * self.encoder_body * tokens + 6 * self.decoder_body * targets
                         + self.attention * length * tokens  # encoder self-attention
                         + self.attention * (target_length + length) * targets  # decoder self- and cross-attention
                         + self.head * targets)
        if self.family in ("bert", "albert", "electra"):
            predictions = batch["mlm_positions"].numel()
        else:
            predictions = tokens
        return float(6 * self.body * tokens + self.attention * length * tokens + self.head * predictions)
