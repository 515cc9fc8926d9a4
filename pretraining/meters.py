"""What the training loop measures: the objectives' losses over all ranks (one all-reduce a step,
read by the host only at log steps), the first non-finite loss, and the figures logged."""

import time

import torch

from ja_common.errors import UserError

from . import checkpoints as ckpt

SHOWN_DATA_WAIT = 0.03  # the progress bar shows the share of time waiting for data above this


def objective_means(names, totals):
    """{"loss/<name>" or "acc/<name>": mean} from the (sum, count) totals laid out as the training step
    returns them: sum and count of ``names[0]``, then of ``names[1]``, ..."""
    return {(name if name.startswith("acc/") else f"loss/{name}"): totals[2 * k] / max(totals[2 * k + 1], 1)
            for k, name in enumerate(names)}


def total_loss(means, weights):
    """The training objective's value: the weighted sum of the objectives' mean losses."""
    return sum(weights.get(key[5:], 1.0) * value for key, value in means.items() if key.startswith("loss/"))


class LossMeter:
    """The objectives' (sum, count) totals over all ranks since the last log line, keyed by objective
    name, with the real (not padding) and all tokens of the batches and the model FLOPs of every rank.
    Kept on the device: the host reads it only at log steps."""

    def __init__(self):
        self.names, self.totals, self.flops, self.started = None, None, 0.0, time.time()
        self.data_seconds = 0.0  # spent waiting for the next batch

    def add(self, names, totals, flops):
        self.names = names
        self.totals = totals if self.totals is None else self.totals + totals
        self.flops += flops

    def read(self, weights):
        """(means {"loss/<name>": ..., "loss": weighted total}, real tokens, all tokens); syncs with the device."""
        totals = self.totals.tolist()
        means = objective_means(self.names, totals)
        means["loss"] = total_loss(means, weights)
        return means, totals[-2], totals[-1]


class NonFiniteWatch:
    """The first step whose global loss is not finite, and that loss, found on the device."""

    def __init__(self, device):
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.value = torch.zeros((), device=device)

    def update(self, loss, step):
        newly_bad = (self.step == 0) & ~torch.isfinite(loss)
        self.step = torch.where(newly_bad, step, self.step)
        self.value = torch.where(newly_bad, loss.detach(), self.value)

    def check(self, model_dir):
        """Stop with the step and the last good checkpoint: a host sync, so only at log and save steps."""
        if self.step.item():
            raise UserError(f"the loss became {self.value.item()} at step {self.step.item()}; the last good checkpoint "
                            f"is {ckpt.newest_checkpoint(model_dir) or 'none'}: lower the learning rate or check the "
                            "data, then --do_continue")


def reduce_losses(accelerator, losses, batch, weights, requests):
    """One all-reduce of every objective's (sum, count), the batch's tokens and this rank's stop and
    save ``requests`` (pretraining/stopping.py).

    Returns the objective names, the all-rank totals (sum and count per objective, then real and
    all tokens), this rank's share of the global weighted loss (what it backpropagates: its sums
    over the global counts), the global loss itself and the requests summed over the ranks.
    """
    names = list(losses)
    device = accelerator.device
    all_tokens = float(batch["input_ids"].numel())
    # torch.full passes a host number as a kernel argument; torch.tensor(x, device=...) would copy
    # it from pageable memory, which on a GPU waits for everything queued before it
    numbers = [torch.full((), n, dtype=torch.float32, device=device) for n in (all_tokens, all_tokens, *requests)]
    if "attention_mask" in batch:  # real tokens: padding not counted
        numbers[0] = batch["attention_mask"].sum().float()
    local = torch.stack([x.detach().float() for name in names for x in losses[name]] + numbers)
    reduced = accelerator.reduce(local, reduction="sum") if accelerator.num_processes > 1 else local
    totals, summed_requests = reduced[:len(reduced) - len(requests)], reduced[len(reduced) - len(requests):]
    sums, counts = totals[0:2 * len(names):2], totals[1:2 * len(names):2].clamp(min=1)
    trained = [k for k, name in enumerate(names) if not name.startswith("acc/")]  # acc/...: logged only
    mine = sum(weights.get(names[k], 1.0) * losses[names[k]][0] / counts[k] for k in trained)
    everyone = sum(weights.get(names[k], 1.0) * sums[k] / counts[k] for k in trained)
    return names, totals, mine, everyone, summed_requests


def log_figures(accelerator, bar, meter, weights, step, scheduler, grad_norm, examples_seen, peak_tflops):
    """Means over the meter's steps to TensorBoard and the progress bar, with the speed figures a GPU user reads."""
    values, real_tokens, all_tokens = meter.read(weights)
    seconds = max(time.time() - meter.started, 1e-9)
    values.update({
        "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm), "examples_seen": examples_seen,
        "tokens_per_second": real_tokens / seconds,  # padding not counted
        "padding_ratio": 1 - real_tokens / max(all_tokens, 1),
        "tflops_per_second": meter.flops / seconds / 1e12,  # model FLOPs of all ranks (pretraining/flops.py)
        "data_wait_ratio": meter.data_seconds / seconds,  # this rank's (the main process's) wait for batches
    })
    if peak_tflops:
        values["mfu"] = values["tflops_per_second"] / (peak_tflops * accelerator.num_processes)
    if torch.cuda.is_available():
        values["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    accelerator.log(values, step=step)
    figures = {"loss": f"{values['loss']:.3f}", "lr": f"{values['lr']:.2e}", "tok_s": f"{values['tokens_per_second']:.0f}"}
    if "mfu" in values:
        figures["mfu"] = f"{values['mfu']:.1%}"
    if "peak_memory_gib" in values:
        figures["mem"] = f"{values['peak_memory_gib']:.1f}G"
    if values["data_wait_ratio"] > SHOWN_DATA_WAIT:
        figures["data"] = f"{values['data_wait_ratio']:.0%}"
    bar.set_postfix(figures)
    return {k: values[k] for k in ("loss", "tokens_per_second") if k in values}
