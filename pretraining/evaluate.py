"""Held-out evaluation: exact across ranks, reproducible, and invisible to training.

- Every rank scores a disjoint share of the held-out examples (every world_size-th); the
  (sum, count) of each objective is summed over all ranks before dividing, so the figures
  are the same, to float rounding, on any number of processes and batch sizes.
- The MLM masks come from the collator's per-example generator with a seed of their own, and
  the model runs in eval mode (no dropout) under a forked torch RNG (ELECTRA samples): two
  evaluations of the same weights give the same figures, and the training's random state is
  left exactly as it was.
"""

import math

import torch

from .data.build import ExampleSpec
from .data.cache import load_examples
from .meters import objective_means, total_loss

EVAL_SEED_OFFSET = 1_000_003  # the held-out masks' seed: the run's seed plus this


def evaluate(accelerator, model, dataset, collator, batch_size, seed, perplexity=()):
    """{'examples': n, 'loss/mlm': ..., 'acc/mlm': ..., 'perplexity/lm': ...} over the whole split."""
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(range(rank, len(dataset), world))
    # every rank runs the same number of batches (DDP and FSDP forwards are collective); a rank whose
    # share has run out repeats its first batch with weight zero
    batches = max(1, math.ceil(math.ceil(len(dataset) / world) / batch_size))
    was_training = model.training
    model.eval()
    sums = None
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # what evaluation samples (ELECTRA's generator) is the same every time
        for k in range(batches):
            indices = mine[k * batch_size:(k + 1) * batch_size]
            weight = 1.0 if indices else 0.0
            indices = indices or mine[:batch_size] or [0]
            items = [dict(dataset[i], epoch=0, index=i) for i in indices]
            batch = {key: value.to(accelerator.device) for key, value in collator(items).items()}
            with accelerator.autocast():
                losses = model(batch)
            names = list(losses)
            local = torch.stack([x.detach().float() * weight for name in names for x in losses[name]])
            sums = local if sums is None else sums + local
    if was_training:
        model.train()
    totals = (accelerator.reduce(sums, reduction="sum") if world > 1 else sums).tolist()
    return figures(names, totals, len(dataset), perplexity)


def figures(names, totals, examples, perplexity=()):
    """The objectives' means from the (sum, count) totals, with the perplexities of ``perplexity``."""
    results = {"examples": examples, **objective_means(names, totals)}
    for name in names:
        if name in perplexity:
            results[f"perplexity/{name}"] = math.exp(min(results[f"loss/{name}"], 700))
    return results


class Evaluator:
    """The held-out examples of a run and what their evaluations gave."""

    def __init__(self, validation_dir, validation_percent, family, preset, vocab, options, batch_size, mask_draws,
                 best=None):
        split = "validation" if validation_percent else "train"  # a --validation_file folder is all held out
        spec = ExampleSpec.from_preset(preset, options.seed, validation_percent)
        self.dataset, _ = load_examples(validation_dir, spec, split=split)
        self.seed = options.seed + EVAL_SEED_OFFSET
        self.collator = family.make_collator(preset, vocab, self.seed, options.masking_mode(preset), mask_draws)
        self.batch_size, self.weights, self.perplexity = batch_size, family.loss_weights(preset), family.perplexity
        self.every = options.eval_steps or preset.eval_steps or preset.save_steps
        self.last, self.best = None, best

    def run(self, accelerator, model, step):
        results = evaluate(accelerator, model, self.dataset, self.collator, self.batch_size, self.seed, self.perplexity)
        results = {"step": step, "loss": total_loss(results, self.weights), **results}
        self.last = results
        self.best = results["loss"] if self.best is None else min(self.best, results["loss"])
        return results
