"""Model FLOPs of a training step and model FLOPs utilisation (MFU): the pieces each family's
formula (its ``flops`` in pretraining/families/) is made of.

The count is the usual one (Kaplan et al. 2020; PaLM, appendix B; nanoGPT's estimate_mfu):
a weight used once per token costs 2 FLOPs forward and 4 backward, so

    flops = 6 * N_body * tokens                      every weight outside the embeddings and the output layer
          + 12 * layers * hidden * length * tokens    attention scores and weighted values (attention models)
          + 6 * hidden_out * vocab * predictions      the output layer, at the positions that are predicted

where ``predictions`` is every token for language models and the masked tokens for MLM (whose
output layer runs only there). Embedding lookups cost no FLOPs. MFU is achieved FLOPs per second
over the device's peak: from ``--peak_tflops``, else from PEAK_TFLOPS for known GPUs.
"""

# dense bf16/fp16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name()
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 125.0,
               "A6000": 155.0, "V100": 125.0, "T4": 65.0, "4090": 165.0, "3090": 71.0}


def device_peak_tflops(override=None):
    """The peak to divide by, or None where it is unknown (the CPU, an unlisted GPU)."""
    import torch

    if override:
        return override
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, value in PEAK_TFLOPS.items():
            if key in name:
                return value
    return None


def parameters(module):
    return sum(p.numel() for p in module.parameters())


def body_parameters(module, head=None):
    """Parameters outside the embedding tables (lookups) and the output layer ``head``."""
    from torch import nn

    skip = {id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    skip |= {id(p) for p in head.parameters()} if head is not None else set()
    return sum(p.numel() for p in module.parameters() if id(p) not in skip)


def output_layer_flops(head, directions=1):
    """6 * width * vocabulary per predicted token (of each direction)."""
    vocab, width = head.weight.shape
    return 6 * width * vocab * directions


def attention_flops(layers, hidden):
    """Per token and per position attended to: scores and weighted values, forward and backward."""
    return 12 * layers * hidden


def every_token(batch):
    return batch["input_ids"].numel()


def masked_tokens(batch):
    """MLM: the output layer runs at the positions the collator listed."""
    return batch["mlm_positions"].numel()


class DenseFlops:
    """Model FLOPs of a micro-batch whose body weights all see every input token."""

    def __init__(self, body, head, attention=0, predictions=every_token):
        self.body, self.head, self.attention, self.predictions = body, head, attention, predictions

    def __call__(self, batch):
        rows, length = batch["input_ids"].shape
        tokens = rows * length
        return float(6 * self.body * tokens + self.attention * length * tokens + self.head * self.predictions(batch))


def transformer_flops(model, predictions=every_token):
    """DenseFlops of a transformer with one output layer (model.get_output_embeddings()), whose
    config names num_hidden_layers and hidden_size; ``predictions``: the tokens it predicts."""
    head, config = model.get_output_embeddings(), model.config
    return DenseFlops(body_parameters(model, head), output_layer_flops(head),
                      attention_flops(config.num_hidden_layers, config.hidden_size), predictions)
