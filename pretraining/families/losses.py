"""The loss pieces the families' training forwards share: losses as (sum, count), with less work.

The model stays the stock class (BertForPreTraining, GPT2LMHeadModel, ...), saved and loaded
as ever; for training its instance gets a forward that takes the batch and returns the losses
(pretraining/modeling.py installs the family's ``training_forward``), so DDP, FSDP and
accelerate's autocast, which all call ``model(...)``, wrap it. Two savings over the stock forward:

- MLM (BERT, ALBERT, the ELECTRA generator): the output layer runs only at the masked
  positions (MosaicBERT's and NVIDIA's "sparse prediction"), about 15% of the tokens. The
  collator lists those positions, so selecting them needs no device-to-host sync.
- Language-model losses (GPT-2, T5, GatedCNN, LSTM, ELMo): ``linear_cross_entropy`` takes the
  hidden states and the output layer and never holds the logits of more than one chunk of
  tokens, in float32, where the stock loss keeps a float32 copy of all of them.

Each equals the stock computation to float tolerance (tests/test_objectives.py).
"""

import torch
import torch.nn.functional as F

IGNORE = -100
CHUNK_ROWS = 4096  # tokens whose logits exist at once: 4096 x 32k vocabulary x 4 bytes = 512 MB


def sum_ce(logits, labels):
    """Cross-entropy summed over the labelled positions, in float32: (sum, count)."""
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")
    return loss, (labels != IGNORE).sum()


class _LinearCrossEntropy(torch.autograd.Function):
    """sum over rows of CE(hidden @ weight.T + bias, labels), chunk by chunk.

    The gradient of cross-entropy with respect to the logits is softmax - one_hot, known in the
    forward pass: each chunk's logits are turned into the gradients of hidden, weight and bias
    at once and dropped, so the backward pass only scales what the forward kept (the same FLOPs
    as the stock computation, no recomputation).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_rows):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.zeros_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        grad_bias = None if bias is None else torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
        for start in range(0, hidden.size(0), chunk_rows):
            h, y = hidden[start:start + chunk_rows], labels[start:start + chunk_rows]
            logits = F.linear(h, weight, bias).float()
            kept = y != IGNORE
            safe = torch.where(kept, y, 0)
            log_probs = logits.log_softmax(-1)
            total -= (log_probs.gather(1, safe[:, None]).squeeze(1) * kept).sum()
            grad_logits = log_probs.exp_()  # softmax, in place of the log-probabilities
            grad_logits[torch.arange(len(y), device=y.device), safe] -= 1.0
            grad_logits *= kept[:, None]
            grad_hidden[start:start + chunk_rows] = (grad_logits.to(weight.dtype) @ weight).to(hidden.dtype)
            grad_weight += grad_logits.t() @ h.float()
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        return (grad_hidden * grad_total.to(grad_hidden.dtype), (grad_weight * grad_total).to(ctx.weight_dtype),
                None if grad_bias is None else (grad_bias * grad_total).to(ctx.weight_dtype), None, None)


def linear_cross_entropy(hidden, weight, bias, labels, chunk_rows=None):
    """(sum, count) of the cross-entropy of ``hidden @ weight.T + bias`` against ``labels`` (any leading shape).

    Under autocast the matrix products run in the autocast type, the softmax in float32.
    """
    hidden = hidden.reshape(-1, hidden.size(-1))
    labels = labels.reshape(-1)
    if torch.is_autocast_enabled(hidden.device.type):
        dtype = torch.get_autocast_dtype(hidden.device.type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    with torch.autocast(hidden.device.type, enabled=False):
        # CHUNK_ROWS read here, not bound as a default: a test lowers it to cover several chunks
        total = _LinearCrossEntropy.apply(hidden, weight, bias, labels, chunk_rows or CHUNK_ROWS)
    return total, (labels != IGNORE).sum()


def accuracy(logits, labels):
    """(correct, count) of the argmax predictions; logged and evaluated, not trained on."""
    return (logits.argmax(-1) == labels).sum().float(), torch.tensor(labels.numel(), device=labels.device)


def masked_rows(hidden, batch):
    """The hidden states at the masked positions the collator listed (flat indices): no sync."""
    return hidden.reshape(-1, hidden.size(-1)).index_select(0, batch["mlm_positions"])
