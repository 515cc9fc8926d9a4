"""What a training step computes for each family: the losses as (sum, count), with less work.

The model stays the stock class (BertForPreTraining, GPT2LMHeadModel, ...), saved and loaded
as ever; for training its instance gets a forward that takes the batch and returns the losses
(``install``), so DDP, FSDP and accelerate's autocast, which all call ``model(...)``, wrap it.
Two savings over the stock forward:

- MLM (BERT, ALBERT, the ELECTRA generator): the output layer runs only at the masked
  positions (MosaicBERT's and NVIDIA's "sparse prediction"), about 15% of the tokens. The
  collator lists those positions, so selecting them needs no device-to-host sync.
- Language-model losses (GPT-2, T5, GatedCNN, LSTM, ELMo): ``linear_cross_entropy`` takes the
  hidden states and the output layer and never holds the logits of more than one chunk of
  tokens, in float32, where the stock loss keeps a float32 copy of all of them.

Each equals the stock computation to float tolerance (tests/test_objectives.py).
"""

from types import MethodType

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


def linear_cross_entropy(hidden, weight, bias, labels, chunk_rows=CHUNK_ROWS):
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
        total = _LinearCrossEntropy.apply(hidden, weight, bias, labels, chunk_rows)
    return total, (labels != IGNORE).sum()


def accuracy(logits, labels):
    """(correct, count) of the argmax predictions; logged and evaluated, not trained on."""
    return (logits.argmax(-1) == labels).sum().float(), torch.tensor(labels.numel(), device=labels.device)


def masked_rows(hidden, batch):
    """The hidden states at the masked positions the collator listed (flat indices): no sync."""
    return hidden.reshape(-1, hidden.size(-1)).index_select(0, batch["mlm_positions"])


def objective_means(names, totals):
    """{"loss/<name>" or "acc/<name>": mean} from the (sum, count) totals laid out as the training step
    returns them: sum and count of ``names[0]``, then of ``names[1]``, ..."""
    return {(name if name.startswith("acc/") else f"loss/{name}"): totals[2 * k] / max(totals[2 * k + 1], 1)
            for k, name in enumerate(names)}


def total_loss(means, weights):
    """The training objective's value: the weighted sum of the objectives' mean losses."""
    return sum(weights.get(key[5:], 1.0) * value for key, value in means.items() if key.startswith("loss/"))


def install(model, training_forward):
    """Give this model instance a forward that takes a batch and returns {name: (sum, count)}."""
    model.forward = MethodType(training_forward, model)
    return model


# ---- one training forward per family ----

def bert_forward(self, batch):
    sequence, pooled = self.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 token_type_ids=batch["token_type_ids"], return_dict=False)[:2]
    predicted, pair = self.cls.predictions(masked_rows(sequence, batch)), self.cls.seq_relationship(pooled)
    return {"mlm": sum_ce(predicted, batch["mlm_labels"]), "nsp": sum_ce(pair, batch["next_sentence_label"]),
            "acc/mlm": accuracy(predicted, batch["mlm_labels"]), "acc/nsp": accuracy(pair, batch["next_sentence_label"])}


def albert_forward(self, batch):
    sequence, pooled = self.albert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                   token_type_ids=batch["token_type_ids"], return_dict=False)[:2]
    predicted, pair = self.predictions(masked_rows(sequence, batch)), self.sop_classifier(pooled)
    return {"mlm": sum_ce(predicted, batch["mlm_labels"]), "sop": sum_ce(pair, batch["sentence_order_label"]),
            "acc/mlm": accuracy(predicted, batch["mlm_labels"]), "acc/sop": accuracy(pair, batch["sentence_order_label"])}


def gpt2_forward(self, batch):
    ids = batch["input_ids"]
    hidden = self.transformer(input_ids=ids, return_dict=False)[0]
    return {"lm": linear_cross_entropy(hidden[:, :-1], self.lm_head.weight, None, ids[:, 1:])}


def t5_forward(self, batch):
    labels = batch["labels"]
    encoded = self.encoder(input_ids=batch["input_ids"], return_dict=False)[0]
    decoded = self.decoder(input_ids=self.prepare_decoder_input_ids_from_labels(labels=labels),
                           encoder_hidden_states=encoded, return_dict=False)[0]
    # as T5ForConditionalGeneration does: transformers 5.24 names the switch scale_decoder_outputs,
    # earlier releases scaled when the output layer was tied to the embeddings
    if getattr(self.config, "scale_decoder_outputs", self.config.tie_word_embeddings):
        decoded = decoded * (self.config.d_model ** -0.5)
    return {"span": linear_cross_entropy(decoded, self.lm_head.weight, self.lm_head.bias, labels)}


def gatedcnn_forward(self, batch):
    ids = batch["input_ids"]
    hidden = self.gated_cnn(ids).last_hidden_state
    return {"lm": linear_cross_entropy(hidden[:, :-1], self.lm_head.weight, self.lm_head.bias, ids[:, 1:])}


def lstm_forward(self, batch):
    ids = batch["input_ids"]
    hidden = self.lstm_lm(ids).last_hidden_state
    if self.projection is not None:
        hidden = self.projection(hidden)
    return {"lm": linear_cross_entropy(hidden[:, :-1], self.lm_head.weight, self.lm_head.bias, ids[:, 1:])}


def elmo_forward(self, batch):
    ids = batch["input_ids"]
    outputs = self.elmo(ids)
    forward = self.elmo.dropout(outputs.forward_states[-1])
    backward = self.elmo.dropout(outputs.backward_states[-1])
    weight, bias = self.softmax.weight, self.softmax.bias
    return {"forward": linear_cross_entropy(forward[:, :-1], weight, bias, ids[:, 1:]),
            "backward": linear_cross_entropy(backward[:, 1:], weight, bias, ids[:, :-1])}
