"""A pretraining run on accelerate: wires the preset, the examples, the model and the checkpoints
(``run_training``), the loop (``train_loop``), and the scoring of a trained model (``run_evaluation``)."""

import json
import os
import shutil
import time
from datetime import datetime

import torch
from tqdm.auto import tqdm

from ja_common.errors import UserError
from ja_common.files import remove_directory
from tokenizer.train import TOKENIZER_FILES

from . import checkpoints as ckpt
from .build import ExampleSpec
from .checkpoints import PRESET_FILE
from .data import load_examples, tokenizer_fingerprint
from .distributed import rank_batch_size, set_cpu_threads
from .evaluate import RESULTS_FILE, Evaluator, write_results
from .flops import FlopCounter, device_peak_tflops
from .inputs import prepare
from .meters import LossMeter, NonFiniteWatch, log_figures, reduce_losses
from .model_card import write_model_card
from .modeling import apply_speed_flags, build_model, load_trained_model, optimizer_for
from .registry import family_of, vocabulary_for
from .sampler import GlobalBatchSampler, IndexedExamples



def make_accelerator(preset, options):
    from accelerate import Accelerator

    fp16_type = preset.fp16_type if options.fp16_type is None else options.fp16_type
    mixed = "bf16" if preset.bf16 else ("fp16" if fp16_type else "no")
    if mixed == "fp16" and not torch.cuda.is_available():
        print("warning: fp16-type needs a GPU; training in full precision on the CPU")
        mixed = "no"
    # Accelerator(cpu=True) on a machine without CUDA: real gloo data parallelism under
    # `accelerate launch --multi_gpu`; a plain Accelerator() there trains each process alone.
    return Accelerator(
        cpu=not torch.cuda.is_available(), mixed_precision=mixed,
        gradient_accumulation_steps=preset.accumulation_steps, log_with="tensorboard",
        project_dir=options.logging_dir, dynamo_backend="inductor" if preset.torch_compile else None,
    )


class TokenizerFiles:
    """Writes the tokenizer beside every saved model (with the tokens the family adds, e.g. T5's sentinels)."""

    def __init__(self, tokenizer_dir, family, encoder):
        self.tokenizer_dir = tokenizer_dir
        self.hf_tokenizer = None
        if family.extra_tokens is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=True)
            extra = family.extra_tokens(encoder)
            tokenizer.add_special_tokens({"additional_special_tokens": list(extra)})
            tokenizer.eos_token = "[SEP]"
            assert tokenizer.convert_tokens_to_ids(list(extra)) == list(extra.values())
            self.hf_tokenizer = tokenizer

    def write(self, directory):
        if self.hf_tokenizer is not None:
            self.hf_tokenizer.save_pretrained(directory)
            return
        for name in TOKENIZER_FILES:
            source = os.path.join(self.tokenizer_dir, name)
            if os.path.isfile(source):
                shutil.copy2(source, os.path.join(directory, name))


def check_model_dir(options):
    """Checkpoints and a trained model in model_dir are existing work: only named flags touch them."""
    if options.overwrite_output_dir:
        return
    existing = ckpt.list_checkpoints(options.model_dir)
    if existing and not options.do_continue:
        raise UserError(f"{options.model_dir} already holds checkpoints (newest: {os.path.basename(existing[-1][1])}): "
                        "pass --do_continue to resume, or --overwrite_output_dir to start afresh")
    if not existing and os.path.isfile(os.path.join(options.model_dir, PRESET_FILE)):
        raise UserError(f"{options.model_dir} holds a trained model and no checkpoint to continue from: pass "
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


def run_training(options, preset):
    if not options.model_dir:
        raise UserError("--model_dir is needed for training")
    if options.do_continue and options.overwrite_output_dir:
        raise UserError("--do_continue and --overwrite_output_dir contradict each other: pass one")
    preset = apply_speed_flags(preset, options)
    family = family_of(preset)
    check_model_dir(options)
    set_cpu_threads()
    accelerator = make_accelerator(preset, options)
    main = accelerator.is_main_process

    # data: one process per node builds, the others wait and load
    with accelerator.local_main_process_first():
        dataset_dir, validation_dir = prepare(options, preset, show_progress=accelerator.is_local_main_process)
    dataset, info = load_examples(dataset_dir, ExampleSpec.from_preset(preset, options.seed,
                                                                       options.validation_split_percentage))
    tokenizer_dir = options.tokenizer_dir or info["tokenizer_dir"]
    from tokenizer.encoder import SubwordEncoder

    encoder = SubwordEncoder(tokenizer_dir)
    vocab = vocabulary_for(preset, encoder)

    # batch sizes of every rank, in rank order
    from accelerate.utils import gather_object

    my_batch = rank_batch_size(preset, options.node_rank)
    rank_batches = gather_object([my_batch]) if accelerator.num_processes > 1 else [my_batch]

    if accelerator.state.deepspeed_plugin is not None:
        # DeepSpeed wants the micro-batch size, which accelerate reads from prepared loaders;
        # ours is not prepared (the sampler shards the data itself).
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = my_batch

    model = build_model(family, preset, vocab, options.seed)
    optimizer = optimizer_for(model, preset)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, preset.warmup_steps, preset.train_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    # The scheduler is stepped by hand once per optimizer step (accelerate's wrapper steps it
    # once per process), so the learning rate follows the same curve on any number of ranks.
    accelerator.register_for_checkpointing(scheduler)

    state_base = {"model_type": preset.model_type, "seed": options.seed, "global_batch": sum(rank_batches),
                  "rank_batches": rank_batches, "whole_word_mask": options.do_whole_word_mask,
                  "tokenizer": tokenizer_fingerprint(tokenizer_dir), "parameters": preset.raw,
                  "validation_split_percentage": options.validation_split_percentage or 0}
    state = resume(accelerator, options, state_base)
    step, run_name = state.get("step", 0), options.run_name or state.get("run_name")
    run_name = run_name or f"{preset.model_type}-{datetime.now():%Y%m%d-%H%M%S}"
    accelerator.init_trackers(run_name)

    tokenizer_files = TokenizerFiles(tokenizer_dir, family, encoder)
    collator = family.make_collator(preset, vocab, options.seed, options.do_whole_word_mask)
    evaluator = None
    if validation_dir is not None:
        evaluator = Evaluator(validation_dir, options.validation_split_percentage, family, preset, vocab, options,
                              my_batch, best=state.get("best_eval_loss"))
    sampler = GlobalBatchSampler(len(dataset), rank_batches, accelerator.process_index, options.seed,
                                 start_step=step * preset.accumulation_steps)
    # A generator of its own: creating a loader iterator otherwise draws from the global torch
    # RNG, which would shift every dropout mask after a resume.
    loader = torch.utils.data.DataLoader(IndexedExamples(dataset), batch_sampler=sampler, collate_fn=collator,
                                         pin_memory=torch.cuda.is_available(),
                                         generator=torch.Generator().manual_seed(options.seed))
    state_base["run_name"] = run_name

    def write_model(directory):
        """Called on every rank: under FSDP and DeepSpeed ZeRO-3 the full weights are gathered from all
        of them (accelerate's documented get_state_dict); the main process writes."""
        state_dict = accelerator.get_state_dict(model)
        if not accelerator.is_main_process:
            return
        accelerator.unwrap_model(model).save_pretrained(directory, state_dict=state_dict)
        tokenizer_files.write(directory)
        for part in family.parts:  # ELECTRA: each part loads with its tokenizer
            tokenizer_files.write(os.path.join(directory, part))
        with open(os.path.join(directory, PRESET_FILE), "w", encoding="utf-8") as f:
            json.dump({"model_type": preset.model_type, "family": preset.family, "parameters": preset.raw,
                       "seed": options.seed, "whole_word_mask": options.do_whole_word_mask}, f, indent=2)
        if evaluator is not None and evaluator.last is not None:
            write_results(directory, evaluator.last)

    bar = tqdm(total=preset.train_steps, initial=step, desc="Pretraining", disable=not main, dynamic_ncols=True)
    try:
        train_loop(accelerator, model, optimizer, scheduler, family, loader, preset, step, write_model, state_base,
                   options, bar, evaluator)
    finally:
        bar.close()  # before any error message, so the message is the last line

    accelerator.wait_for_everyone()
    write_model(options.model_dir)
    if main:
        write_model_card(options.model_dir, family, preset, info, state_base, evaluator, options)
        print(f"model saved to {options.model_dir}")
    accelerator.end_training()


def resume(accelerator, options, run):
    """--do_continue: load the newest intact checkpoint into the prepared objects; returns its recorded
    state ({} when starting afresh). Also readies model_dir: the debris of killed runs is removed and,
    with --overwrite_output_dir, the old checkpoints."""
    from accelerate.utils import broadcast_object_list

    main, checkpoint = accelerator.is_main_process, None
    if options.do_continue:  # the main process checks the files; every rank resumes from its choice
        choice = [ckpt.newest_intact_checkpoint(options.model_dir, warn=accelerator.print) if main else None]
        checkpoint = broadcast_object_list(choice)[0] if accelerator.num_processes > 1 else choice[0]
        if checkpoint is None and ckpt.list_checkpoints(options.model_dir):
            raise UserError(f"--do_continue: every checkpoint in {options.model_dir} is damaged (see the warnings); "
                            "restore one from a backup, or start afresh with --overwrite_output_dir")
    if main:
        if options.overwrite_output_dir:
            for _, old in ckpt.list_checkpoints(options.model_dir):
                remove_directory(old)
        ckpt.clean_debris(options.model_dir)
        os.makedirs(options.model_dir, exist_ok=True)
    accelerator.wait_for_everyone()
    if checkpoint is None:
        if options.do_continue:
            accelerator.print(f"no checkpoint in {options.model_dir} yet: starting from step 0")
        return {}
    state = ckpt.read_state(checkpoint)
    check_same_run(checkpoint, state, run)
    try:
        accelerator.load_state(os.path.join(checkpoint, ckpt.ACCELERATE_DIR))
    except (RuntimeError, ValueError, KeyError) as error:  # e.g. weights of another shape
        raise UserError(f"--do_continue: {checkpoint} does not fit the model of this preset "
                        f"({str(error).splitlines()[0][:200]}); restore the preset it was trained with") from None
    started = options.process_start
    accelerator.print(f"resumed from {checkpoint} at step {state['step']}"
                      + (f", {time.time() - started:.1f} s after the process started" if started else ""))
    return state


def run_evaluation(options, preset):
    """--do_eval: score a trained model directory (final or checkpoint) on the held-out examples."""
    if not options.model_dir or not os.path.isfile(os.path.join(options.model_dir, PRESET_FILE)):
        raise UserError(f"--do_eval needs --model_dir with a model trained by run_pretraining.py "
                        f"({options.model_dir or 'none given'} holds no {PRESET_FILE})")
    preset = apply_speed_flags(preset, options)
    family = family_of(preset)
    set_cpu_threads()
    accelerator = make_accelerator(preset, options)
    with accelerator.local_main_process_first():
        _, validation_dir = prepare(options, preset, show_progress=accelerator.is_local_main_process)
    if validation_dir is None:
        raise UserError("--do_eval needs held-out examples: --validation_split_percentage (as in training) or "
                        "--validation_file")
    _, info = load_examples(validation_dir)
    from tokenizer.encoder import SubwordEncoder

    vocab = vocabulary_for(preset, SubwordEncoder(options.tokenizer_dir or info["tokenizer_dir"]))
    model = load_trained_model(family, options.model_dir)
    model = accelerator.prepare(model)
    evaluator = Evaluator(validation_dir, options.validation_split_percentage, family, preset, vocab, options,
                          rank_batch_size(preset, options.node_rank))
    results = evaluator.run(accelerator, model, step=None)
    if accelerator.is_main_process:
        write_results(options.model_dir, results)
        print("eval " + "  ".join(f"{k} {v:.4f}" for k, v in results.items() if isinstance(v, float)))
        print(f"written to {os.path.join(options.model_dir, RESULTS_FILE)}")


def train_loop(accelerator, model, optimizer, scheduler, family, loader, preset, step, write_model, state_base, options,
               bar, evaluator=None):
    parameters = [p for p in model.parameters() if p.requires_grad]
    weights = family.loss_weights(preset)
    flop_counter = FlopCounter(preset.family, accelerator.unwrap_model(model))
    peak_tflops = device_peak_tflops(options.peak_tflops)
    meter, watch = LossMeter(), NonFiniteWatch(accelerator.device)
    examples_seen = step * preset.accumulation_steps * state_base["global_batch"]
    grad_norm = torch.tensor(0.0)
    model.train()
    batches = iter(loader)
    while step < preset.train_steps:
        batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in next(batches).items()}
        with accelerator.accumulate(model):
            with accelerator.autocast():
                losses = model(batch)
            names, totals, loss, global_loss = reduce_losses(accelerator, losses, batch, weights)
            # DDP averages the gradients over the ranks: scaled back, the update is the global mean's
            accelerator.backward(loss * accelerator.num_processes)
            watch.update(global_loss, step + 1)
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            optimizer.zero_grad()
        meter.add(names, totals, flop_counter.step_flops(batch) * accelerator.num_processes)
        examples_seen += state_base["global_batch"]
        if not accelerator.sync_gradients:
            continue
        scheduler.step()
        step += 1
        bar.update(1)
        last = step == preset.train_steps
        logging_step = step % preset.logging_steps == 0 or last
        saving_step = step % preset.save_steps == 0 or last
        eval_step = evaluator is not None and (step % evaluator.every == 0 or last)
        if not (logging_step or saving_step or eval_step):
            continue
        watch.check(options.model_dir)  # the loop's only host sync, before any log or checkpoint
        if logging_step:
            state_base["last_train"] = log_figures(accelerator, bar, meter, weights, step, scheduler, grad_norm,
                                                   examples_seen, peak_tflops)
            meter = LossMeter()
        if eval_step:
            meter.started += run_evaluator(accelerator, model, evaluator, step, bar)  # speed figures: training alone
            state_base["best_eval_loss"] = evaluator.best
        if saving_step:
            ckpt.save_checkpoint(accelerator, options.model_dir, step, write_model,
                                 dict(state_base, step=step, examples_seen=examples_seen), preset.save_total_limit)
    state_base["examples_seen"] = examples_seen


def run_evaluator(accelerator, model, evaluator, step, bar):
    """Evaluate, log the figures and print them; returns the seconds it took."""
    started = time.time()
    results = evaluator.run(accelerator, model, step)
    seconds = time.time() - started
    accelerator.log({**{f"eval/{k}": v for k, v in results.items() if k != "step"}, "eval/seconds": seconds}, step=step)
    if accelerator.is_main_process:
        bar.write(f"eval at step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in results.items()
                                                        if isinstance(v, float)) + f"  ({seconds:.2f} s)")
    return seconds
