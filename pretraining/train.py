"""The accelerate training loop of run_pretraining.py: wires presets, data, model and checkpoints."""

import dataclasses
import json
import os
import shutil
import time
from datetime import datetime

import torch
from tqdm.auto import tqdm

from tokenizer.errors import UserError
from tokenizer.train import TOKENIZER_FILES

from . import checkpoints as ckpt
from . import objectives
from .data import ExampleSpec, load_examples, sentinel_ids, tokenizer_fingerprint
from .distributed import rank_batch_size, set_cpu_threads
from .evaluate import RESULTS_FILE, Evaluator, write_results
from .flops import FlopCounter, device_peak_tflops
from .inputs import prepare
from .model_card import write_model_card
from .objectives import objective_means, total_loss
from .registry import ATTENTION_FAMILIES, family_of, vocabulary_for
from .sampler import GlobalBatchSampler, IndexedExamples

PRESET_FILE = "pretraining_preset.json"


def make_accelerator(preset, args):
    from accelerate import Accelerator

    fp16_type = preset.fp16_type if args.fp16_type is None else args.fp16_type
    mixed = "bf16" if preset.bf16 else ("fp16" if fp16_type else "no")
    if mixed == "fp16" and not torch.cuda.is_available():
        print("warning: fp16-type needs a GPU; training in full precision on the CPU")
        mixed = "no"
    # Accelerator(cpu=True) on a machine without CUDA: real gloo data parallelism under
    # `accelerate launch --multi_gpu`; a plain Accelerator() there trains each process alone.
    return Accelerator(
        cpu=not torch.cuda.is_available(), mixed_precision=mixed,
        gradient_accumulation_steps=preset.accumulation_steps, log_with="tensorboard",
        project_dir=args.logging_dir, dynamo_backend="inductor" if preset.torch_compile else None,
    )


def apply_speed_flags(preset, args):
    """--torch_compile, --gradient_checkpointing, --attention_implementation and --bf16 override the preset."""
    changes = {name: getattr(args, name) for name in ("torch_compile", "gradient_checkpointing",
                                                        "attention_implementation", "bf16")
               if getattr(args, name, None) is not None}
    if changes.get("bf16"):
        changes["fp16_type"] = 0
    return dataclasses.replace(preset, **changes) if changes else preset


def set_speed_switches(model, family, preset):
    """Attention implementation and gradient checkpointing, through transformers' public switches."""
    parts = [model.generator, model.discriminator] if family.name == "electra" else [model]
    for part in parts:
        if preset.attention_implementation:
            if family.name not in ATTENTION_FAMILIES:
                raise UserError(f"--model_type {preset.model_type}: the {family.name} family has no attention; drop "
                                "\"attention-implementation\"")
            try:
                part.set_attn_implementation(preset.attention_implementation)
            except (ValueError, ImportError) as error:
                raise UserError(f"\"attention-implementation\" {preset.attention_implementation}: "
                                f"{str(error).splitlines()[0]}") from None
        if preset.gradient_checkpointing:
            if not part.supports_gradient_checkpointing:
                raise UserError(f"--model_type {preset.model_type}: the {family.name} family does not support "
                                "gradient checkpointing; drop \"gradient-checkpointing\"")
            part.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def optimizer_for(model, preset):
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": preset.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel (CPU and GPU in recent torch) is what the stock Trainer uses too
        return torch.optim.AdamW(groups, lr=preset.learning_rate, betas=(0.9, 0.999), eps=1e-6, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=preset.learning_rate, betas=(0.9, 0.999), eps=1e-6)


def build_model(family, preset, vocab, seed):
    """The model, with the family's training forward (objectives.py) and the preset's speed switches."""
    model = _new_or_pretrained_model(family, preset, vocab, seed)
    set_speed_switches(model, family, preset)
    if family.training_forward is not None:
        objectives.install(model, family.training_forward)
    return model


def _new_or_pretrained_model(family, preset, vocab, seed):
    from accelerate.utils import set_seed

    if family.create is not None:
        set_seed(seed)
        return family.create(preset, vocab)
    model_class = family.model_class()
    if preset.pretrained_model_name_or_path:
        path = preset.pretrained_model_name_or_path
        if not os.path.isdir(path):
            raise UserError(f"pretrained_model_name_or_path {path} is not a directory")
        model = model_class.from_pretrained(path)
        if model.config.vocab_size != vocab.size:
            raise UserError(f"{path} has a vocabulary of {model.config.vocab_size}, the tokenizer {vocab.size}: "
                            "continue pretraining with the tokenizer the model was trained with")
        if preset.frozen_layers >= 0:
            for module in family.frozen_modules(model, preset.frozen_layers):
                module.requires_grad_(False)
        return model
    set_seed(seed)
    return model_class(family.build_config(preset, vocab))


class TokenizerFiles:
    """Writes the tokenizer beside every saved model (T5: with its sentinel tokens added)."""

    def __init__(self, tokenizer_dir, preset, encoder):
        self.tokenizer_dir = tokenizer_dir
        self.hf_tokenizer = None
        if preset.family == "t5":
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=True)
            sentinels = [f"<extra_id_{k}>" for k in range(len(sentinel_ids(encoder)))]
            tokenizer.add_special_tokens({"additional_special_tokens": sentinels})
            tokenizer.eos_token = "[SEP]"
            assert tokenizer.convert_tokens_to_ids(sentinels) == sentinel_ids(encoder)
            self.hf_tokenizer = tokenizer

    def write(self, directory):
        if self.hf_tokenizer is not None:
            self.hf_tokenizer.save_pretrained(directory)
            return
        for name in TOKENIZER_FILES:
            source = os.path.join(self.tokenizer_dir, name)
            if os.path.isfile(source):
                shutil.copy2(source, os.path.join(directory, name))


def check_model_dir(args):
    """Checkpoints and a trained model in model_dir are existing work: only named flags touch them."""
    if args.overwrite_output_dir:
        return
    existing = ckpt.list_checkpoints(args.model_dir)
    if existing and not args.do_continue:
        raise UserError(f"{args.model_dir} already holds checkpoints (newest: {os.path.basename(existing[-1][1])}): "
                        "pass --do_continue to resume, or --overwrite_output_dir to start afresh")
    if not existing and os.path.isfile(os.path.join(args.model_dir, PRESET_FILE)):
        raise UserError(f"{args.model_dir} holds a trained model and no checkpoint to continue from: pass "
                        "--overwrite_output_dir to train a new one in its place, or choose another --model_dir")


# preset keys a resumed run may change: they decide when to stop, save and log, not what is learned
RESUMABLE_KEYS = {"train-steps", "save-steps", "logging-steps", "save-total-limit", "batch-size", "torch-compile",
                  "gradient-checkpointing", "attention-implementation"}


def check_same_run(checkpoint, state, run):
    """A resume must continue the run the checkpoint belongs to; ``run`` is what this one would record."""
    different = []
    for key, label in (("tokenizer", "the tokenizer (--tokenizer_dir's files)"), ("seed", "--seed"),
                       ("whole_word_mask", "--do_whole_word_mask"),
                       ("validation_split_percentage", "--validation_split_percentage"),
                       ("global_batch", "the global batch size (sum of batch-size over the nodes)")):
        if key in state and state[key] != run[key]:
            different.append(f"{label}: {state[key]!r} then, {run[key]!r} now")
    if "parameters" in state:
        keys = sorted((set(state["parameters"]) | set(run["parameters"])) - RESUMABLE_KEYS)
        changed = [k for k in keys if state["parameters"].get(k) != run["parameters"].get(k)]
        if changed:
            different.append(f"preset keys {', '.join(changed)}")
    if different:
        raise UserError(f"--do_continue: {checkpoint} was trained with another setup ({'; '.join(different)}); restore "
                        "it to continue, or start a new run with --overwrite_output_dir or another --model_dir")


def run_training(args, preset):
    if not args.model_dir:
        raise UserError("--model_dir is needed for training")
    if args.do_continue and args.overwrite_output_dir:
        raise UserError("--do_continue and --overwrite_output_dir contradict each other: pass one")
    preset = apply_speed_flags(preset, args)
    family = family_of(preset)
    check_model_dir(args)
    set_cpu_threads()
    accelerator = make_accelerator(preset, args)
    main = accelerator.is_main_process

    # data: one process per node builds, the others wait and load
    with accelerator.local_main_process_first():
        dataset_dir, validation_dir = prepare(args, preset, show_progress=accelerator.is_local_main_process)
    dataset, info = load_examples(dataset_dir, ExampleSpec.from_preset(preset, args.seed,
                                                                       args.validation_split_percentage))
    tokenizer_dir = args.tokenizer_dir or info["tokenizer_dir"]
    from tokenizer.encoder import SubwordEncoder

    encoder = SubwordEncoder(tokenizer_dir)
    vocab = vocabulary_for(preset, encoder)

    # batch sizes of every rank, in rank order
    from accelerate.utils import broadcast_object_list, gather_object

    my_batch = rank_batch_size(preset, args.node_rank)
    rank_batches = gather_object([my_batch]) if accelerator.num_processes > 1 else [my_batch]

    if accelerator.state.deepspeed_plugin is not None:
        # DeepSpeed wants the micro-batch size, which accelerate reads from prepared loaders;
        # ours is not prepared (the sampler shards the data itself).
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = my_batch

    model = build_model(family, preset, vocab, args.seed)
    optimizer = optimizer_for(model, preset)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, preset.warmup_steps, preset.train_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    # The scheduler is stepped by hand once per optimizer step (accelerate's wrapper steps it
    # once per process), so the learning rate follows the same curve on any number of ranks.
    accelerator.register_for_checkpointing(scheduler)

    step, run_name = 0, args.run_name
    state_base = {"model_type": preset.model_type, "seed": args.seed, "global_batch": sum(rank_batches),
                  "rank_batches": rank_batches, "whole_word_mask": args.do_whole_word_mask,
                  "tokenizer": tokenizer_fingerprint(tokenizer_dir), "parameters": preset.raw,
                  "validation_split_percentage": args.validation_split_percentage or 0}
    resume_from = None
    if args.do_continue:  # the main process checks the files; every rank resumes from its choice
        choice = [ckpt.newest_intact_checkpoint(args.model_dir, warn=accelerator.print) if main else None]
        resume_from = broadcast_object_list(choice)[0] if accelerator.num_processes > 1 else choice[0]
        if resume_from is None and ckpt.list_checkpoints(args.model_dir):
            raise UserError(f"--do_continue: every checkpoint in {args.model_dir} is damaged (see the warnings); "
                            "restore one from a backup, or start afresh with --overwrite_output_dir")
    if main:
        if args.overwrite_output_dir:
            for _, old in ckpt.list_checkpoints(args.model_dir):
                ckpt.remove_directory(old)
        ckpt.clean_debris(args.model_dir)
        os.makedirs(args.model_dir, exist_ok=True)
    accelerator.wait_for_everyone()
    if resume_from:
        state = ckpt.read_state(resume_from)
        check_same_run(resume_from, state, state_base)
        try:
            accelerator.load_state(os.path.join(resume_from, ckpt.ACCELERATE_DIR))
        except (RuntimeError, ValueError, KeyError) as error:  # e.g. weights of another shape
            raise UserError(f"--do_continue: {resume_from} does not fit the model of this preset "
                            f"({str(error).splitlines()[0][:200]}); restore the preset it was trained with") from None
        step, run_name = state["step"], run_name or state["run_name"]
        started = getattr(args, "process_start", None)
        accelerator.print(f"resumed from {resume_from} at step {step}"
                          + (f", {time.time() - started:.1f} s after the process started" if started else ""))
    elif args.do_continue:
        accelerator.print(f"no checkpoint in {args.model_dir} yet: starting from step 0")
    run_name = run_name or f"{preset.model_type}-{datetime.now():%Y%m%d-%H%M%S}"
    accelerator.init_trackers(run_name)

    tokenizer_files = TokenizerFiles(tokenizer_dir, preset, encoder)
    collator = family.make_collator(preset, vocab, args.seed, args.do_whole_word_mask)
    evaluator = None
    if validation_dir is not None:
        evaluator = Evaluator(validation_dir, args.validation_split_percentage, family, preset, vocab, args,
                              my_batch, best=state.get("best_eval_loss") if resume_from else None)
    sampler = GlobalBatchSampler(len(dataset), rank_batches, accelerator.process_index, args.seed,
                                 start_step=step * preset.accumulation_steps)
    # A generator of its own: creating a loader iterator otherwise draws from the global torch
    # RNG, which would shift every dropout mask after a resume.
    loader = torch.utils.data.DataLoader(IndexedExamples(dataset), batch_sampler=sampler, collate_fn=collator,
                                         pin_memory=torch.cuda.is_available(),
                                         generator=torch.Generator().manual_seed(args.seed))
    state_base["run_name"] = run_name

    def write_model(directory):
        """Called on every rank: under FSDP and DeepSpeed ZeRO-3 the full weights are gathered from all
        of them (accelerate's documented get_state_dict); the main process writes."""
        state_dict = accelerator.get_state_dict(model)
        if not accelerator.is_main_process:
            return
        accelerator.unwrap_model(model).save_pretrained(directory, state_dict=state_dict)
        tokenizer_files.write(directory)
        for part in ("generator", "discriminator"):  # ELECTRA: each part loads with its tokenizer
            if os.path.isdir(os.path.join(directory, part)):
                tokenizer_files.write(os.path.join(directory, part))
        with open(os.path.join(directory, PRESET_FILE), "w", encoding="utf-8") as f:
            json.dump({"model_type": preset.model_type, "family": preset.family, "parameters": preset.raw,
                       "seed": args.seed, "whole_word_mask": args.do_whole_word_mask}, f, indent=2)
        if evaluator is not None and evaluator.last is not None:
            write_results(directory, evaluator.last)

    bar = tqdm(total=preset.train_steps, initial=step, desc="Pretraining", disable=not main, dynamic_ncols=True)
    try:
        train_loop(accelerator, model, optimizer, scheduler, family, loader, preset, step, write_model, state_base,
                   args, bar, evaluator)
    finally:
        bar.close()  # before any error message, so the message is the last line

    accelerator.wait_for_everyone()
    write_model(args.model_dir)
    if main:
        write_model_card(args.model_dir, preset, info, state_base, evaluator, args)
        print(f"model saved to {args.model_dir}")
    accelerator.end_training()


def run_evaluation(args, preset):
    """--do_eval: score a trained model directory (final or checkpoint) on the held-out examples."""
    if not args.model_dir or not os.path.isfile(os.path.join(args.model_dir, PRESET_FILE)):
        raise UserError(f"--do_eval needs --model_dir with a model trained by run_pretraining.py "
                        f"({args.model_dir or 'none given'} holds no {PRESET_FILE})")
    preset = apply_speed_flags(preset, args)
    family = family_of(preset)
    set_cpu_threads()
    accelerator = make_accelerator(preset, args)
    with accelerator.local_main_process_first():
        _, validation_dir = prepare(args, preset, show_progress=accelerator.is_local_main_process)
    if validation_dir is None:
        raise UserError("--do_eval needs held-out examples: --validation_split_percentage (as in training) or "
                        "--validation_file")
    _, info = load_examples(validation_dir)
    from tokenizer.encoder import SubwordEncoder

    vocab = vocabulary_for(preset, SubwordEncoder(args.tokenizer_dir or info["tokenizer_dir"]))
    model = load_trained_model(family, args.model_dir)
    if family.training_forward is not None:
        objectives.install(model, family.training_forward)
    model = accelerator.prepare(model)
    evaluator = Evaluator(validation_dir, args.validation_split_percentage, family, preset, vocab, args,
                          rank_batch_size(preset, args.node_rank))
    results = evaluator.run(accelerator, model, step=None)
    if accelerator.is_main_process:
        write_results(args.model_dir, results)
        print("eval " + "  ".join(f"{k} {v:.4f}" for k, v in results.items() if isinstance(v, float)))
        print(f"written to {os.path.join(args.model_dir, RESULTS_FILE)}")


def load_trained_model(family, model_dir):
    if family.name == "electra":
        from electra.model import DISCRIMINATOR_DIR, GENERATOR_DIR, ElectraPretrainingModel

        return ElectraPretrainingModel.from_directories(os.path.join(model_dir, GENERATOR_DIR),
                                                        os.path.join(model_dir, DISCRIMINATOR_DIR))
    return family.model_class().from_pretrained(model_dir)


class Window:
    """What the steps since the last log line add up to, kept on the device (no host sync per step).

    ``sums`` holds, per objective, the (sum, count) totals over all ranks, then the real (not
    padding) tokens and all tokens of the batches; ``flops`` the model FLOPs of every rank.
    """

    def __init__(self):
        self.sums, self.flops, self.started = None, 0.0, time.time()

    def add(self, totals, flops):
        self.sums = totals if self.sums is None else self.sums + totals
        self.flops += flops


def train_loop(accelerator, model, optimizer, scheduler, family, loader, preset, step, write_model, state_base, args,
               bar, evaluator=None):
    parameters = [p for p in model.parameters() if p.requires_grad]
    weights = family.loss_weights(preset)
    flop_counter = FlopCounter(preset.family, accelerator.unwrap_model(model))
    peak_tflops = device_peak_tflops(args.peak_tflops)
    window = Window()
    examples_seen = step * preset.accumulation_steps * state_base["global_batch"]
    grad_norm = torch.tensor(0.0)
    # the first non-finite loss (its step and value), found on the device and read at log and save steps
    first_bad_step = torch.zeros((), dtype=torch.long, device=accelerator.device)
    first_bad_value = torch.zeros((), device=accelerator.device)
    model.train()
    batches = iter(loader)
    while step < preset.train_steps:
        batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in next(batches).items()}
        with accelerator.accumulate(model):
            with accelerator.autocast():
                losses = model(batch)
            names = list(losses)
            real_tokens = batch["attention_mask"].sum() if "attention_mask" in batch else batch["input_ids"].numel()
            local = torch.stack([x.detach().float() for name in names for x in losses[name]]
                                + [torch.as_tensor(real_tokens, dtype=torch.float32, device=accelerator.device),
                                   torch.tensor(float(batch["input_ids"].numel()), device=accelerator.device)])
            totals = accelerator.reduce(local, reduction="sum") if accelerator.num_processes > 1 else local
            sums, counts = totals[0:2 * len(names):2], totals[1:2 * len(names):2].clamp(min=1)
            trained = [k for k, n in enumerate(names) if not n.startswith("acc/")]
            # each rank's share of the global mean: sum / global count, times the ranks DDP averages over
            loss = sum(weights.get(names[k], 1.0) * losses[names[k]][0] / counts[k] for k in trained)
            accelerator.backward(loss * accelerator.num_processes)
            global_loss = sum(weights.get(names[k], 1.0) * sums[k] / counts[k] for k in trained)
            newly_bad = (first_bad_step == 0) & ~torch.isfinite(global_loss)
            first_bad_step = torch.where(newly_bad, step + 1, first_bad_step)
            first_bad_value = torch.where(newly_bad, global_loss.detach(), first_bad_value)
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            optimizer.zero_grad()
        window.add(totals, flop_counter.step_flops(batch) * accelerator.num_processes)
        examples_seen += state_base["global_batch"]
        if not accelerator.sync_gradients:
            continue
        scheduler.step()
        step += 1
        bar.update(1)
        logging_step = step % preset.logging_steps == 0 or step == preset.train_steps
        saving_step = step % preset.save_steps == 0 or step == preset.train_steps
        eval_step = evaluator is not None and (step % evaluator.every == 0 or step == preset.train_steps)
        if not (logging_step or saving_step or eval_step):
            continue
        if first_bad_step.item():  # the only host sync of the loop, before any log or checkpoint
            last = ckpt.newest_checkpoint(args.model_dir)
            raise UserError(f"the loss became {first_bad_value.item()} at step {first_bad_step.item()}; the last good "
                            f"checkpoint is {last or 'none'}: lower the learning rate or check the data, then "
                            "--do_continue")
        if logging_step:
            state_base["last_train"] = log_figures(accelerator, bar, window, names, weights, step, scheduler,
                                                   grad_norm, examples_seen, peak_tflops)
            window = Window()
        if eval_step:
            started = time.time()
            results = evaluator.run(accelerator, model, step)
            seconds = time.time() - started
            accelerator.log({**{f"eval/{k}": v for k, v in results.items() if k != "step"}, "eval/seconds": seconds},
                            step=step)
            state_base["best_eval_loss"] = evaluator.best
            window.started += seconds  # the speed figures are of training alone
            if accelerator.is_main_process:
                bar.write(f"eval at step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in results.items()
                                                                if isinstance(v, float)) + f"  ({seconds:.2f} s)")
        if saving_step:
            ckpt.save_checkpoint(accelerator, args.model_dir, step, write_model,
                                 dict(state_base, step=step, examples_seen=examples_seen), preset.save_total_limit)
    state_base["examples_seen"] = examples_seen


def log_figures(accelerator, bar, window, names, weights, step, scheduler, grad_norm, examples_seen, peak_tflops):
    """Means over the window to TensorBoard and the progress bar, with the speed figures a GPU user reads."""
    sums = window.sums.tolist()
    seconds = max(time.time() - window.started, 1e-9)
    real_tokens, all_tokens = sums[-2], sums[-1]
    values = objective_means(names, sums)
    values["loss"] = total_loss(values, weights)
    values.update({
        "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm), "examples_seen": examples_seen,
        "tokens_per_second": real_tokens / seconds,  # padding not counted
        "padding_ratio": 1 - real_tokens / max(all_tokens, 1),
        "tflops_per_second": window.flops / seconds / 1e12,  # model FLOPs of all ranks (pretraining/flops.py)
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
    bar.set_postfix(figures)
    return {k: values[k] for k in ("loss", "tokens_per_second") if k in values}
