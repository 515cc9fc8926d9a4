"""A pretraining run on accelerate: wires the preset, the examples, the model and the checkpoints
(``run_training``), the loop (``train_loop``), and the scoring of a trained model (``run_evaluation``)."""

import contextlib
import dataclasses
import functools
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime

import torch
from tqdm.auto import tqdm

from ja_common.errors import Stopped, UserError
from ja_common.files import remove_directory
from ja_common.locks import exclusive

from . import checkpoints as ckpt
from .checkpoints import PRESET_FILE, RESULTS_FILE, ModelWriter, TokenizerFiles, write_results
from .data.build import ExampleSpec
from .data.cache import examples_identity, load_examples, tokenizer_fingerprint
from .data.prepare import prepare
from .data.sampler import GlobalBatchSampler, IndexedExamples
from .distributed import (check_nodes, default_loader_workers, gather_rank_batches, rank_batch_size, set_cpu_threads,
                          set_deepspeed_micro_batch, start_loader_worker)
from .evaluate import Evaluator
from .families import family_of, vocabulary_for
from .flops import device_peak_tflops
from .meters import LossMeter, NonFiniteWatch, log_figures, reduce_losses
from .model_card import write_model_card
from .modeling import apply_flag_overrides, build_model, load_trained_model, optimizer_for, scheduler_for
from .run_record import RunRecord
from .stopping import EXIT_STOPPED, STATUS_FILE, Agreement, StopControl, write_status
from .trackers import chosen_trackers, log_with, run_config


LOADER_PREFETCH = 4  # batches each loader worker keeps ready


def make_accelerator(preset, options, trackers=(), run_name=None):
    """The run's accelerator; ``trackers`` (trackers.chosen_trackers) get the figures of the run
    ``run_name``."""
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
        gradient_accumulation_steps=preset.accumulation_steps, log_with=log_with(trackers, run_name),
        project_dir=options.logging_dir, dynamo_backend="inductor" if preset.torch_compile else None,
    )


def check_paths(options):
    """The run's folders can be what they are for: nothing to find out at the end."""
    for flag, path in (("--model_dir", options.model_dir), ("--logging_dir", options.logging_dir)):
        if path and os.path.exists(path) and not os.path.isdir(path):
            raise UserError(f"{flag} {path} is a file, not a folder: choose a folder")
    if options.tokenizer_dir and os.path.realpath(options.tokenizer_dir) == os.path.realpath(options.model_dir):
        raise UserError(f"--model_dir {options.model_dir} is the --tokenizer_dir: the model would be written over "
                        "the tokenizer's folder; choose another --model_dir (the tokenizer is copied into it)")


def check_model_dir(options):
    """Checkpoints and a trained model in model_dir are existing work, and so are files that are not
    a run's: only named flags touch them."""
    check_paths(options)
    if options.overwrite_output_dir:
        return
    theirs = foreign_files(options.model_dir)
    if theirs:
        raise UserError(f"--model_dir {options.model_dir} holds files that are not a run's ({', '.join(theirs[:3])}"
                        f"{', ...' if len(theirs) > 3 else ''}): choose an empty or new folder, or pass "
                        "--overwrite_output_dir to train there anyway (files of the same names are replaced)")
    existing = ckpt.list_checkpoints(options.model_dir)
    if existing and not options.do_continue:
        raise UserError(f"{options.model_dir} already holds checkpoints (newest: {os.path.basename(existing[-1][1])}): "
                        "pass --do_continue to resume, or --overwrite_output_dir to start afresh")
    if not existing and os.path.isfile(os.path.join(options.model_dir, PRESET_FILE)):
        raise UserError(f"{options.model_dir} holds a trained model and no checkpoint to continue from: pass "
                        "--overwrite_output_dir to train a new one in its place, or choose another --model_dir")


def foreign_files(model_dir):
    """What model_dir holds that no run of this project wrote (a trained model's files are a run's)."""
    if not os.path.isdir(model_dir) or os.path.isfile(os.path.join(model_dir, PRESET_FILE)):
        return []
    return sorted(n for n in os.listdir(model_dir)
                  if not (n.startswith((".", "checkpoint-")) or n == STATUS_FILE))  # ours: debris, checkpoints


@contextlib.contextmanager
def owned_by_this_run(model_dir, is_main):
    """One run owns a model directory at a time: a lock beside it (ja_common/locks.py, safe on a shared
    filesystem, broken when its holder is gone), held by the main process for the whole run."""
    if not is_main:
        yield
        return

    def refuse(lock):
        try:
            with open(lock, encoding="utf-8") as f:
                holder = json.load(f)
            who = f"process {holder['pid']} on {holder['host']}"
        except (OSError, ValueError, KeyError):
            who = "another process"
        raise UserError(f"--model_dir {model_dir} is in use by another run ({who}, lock {lock}): wait for it to "
                        "end, or choose another --model_dir")

    with exclusive(model_dir, on_wait=refuse):
        yield


def open_encoder(tokenizer_dir):
    from tokenizer.encoder import SubwordEncoder

    return SubwordEncoder(tokenizer_dir)


@dataclass
class Training:
    """What the loop trains with: the prepared model, optimizer and schedule, the batches, and where
    checkpoints and figures go."""

    accelerator: object
    family: object
    preset: object
    model: object
    optimizer: object
    scheduler: object
    loader: object
    writer: ModelWriter
    model_dir: str
    stops: StopControl
    evaluator: Evaluator = None
    peak_tflops: float = None


def run_training(options, preset):
    if not options.model_dir:
        raise UserError("--model_dir is needed for training")
    if options.do_continue and options.overwrite_output_dir:
        raise UserError("--do_continue and --overwrite_output_dir contradict each other: pass one")
    preset = apply_flag_overrides(preset, options)
    family = family_of(preset)
    if options.masking and not family.masked_lm:
        raise UserError(f"--masking: the {family.title} family predicts no masked tokens; leave the flag out")
    options = dataclasses.replace(options, masking=options.masking_mode(preset))  # its flags checked before work
    check_model_dir(options)
    # from here a stop signal is honoured: at once until training starts, then at a step boundary
    elapsed = time.time() - options.process_start if options.process_start else 0.0
    stops = StopControl(options.stop_signals, options.max_minutes, preset.save_minutes, elapsed).install()
    trackers = chosen_trackers(options.report_to)
    set_cpu_threads()
    run_name = run_name_for(options, preset)
    accelerator = make_accelerator(preset, options, trackers, run_name)
    check_nodes(preset, accelerator.num_processes)  # before the examples are built
    with owned_by_this_run(options.model_dir, accelerator.is_main_process):
        train(options, preset, family, accelerator, stops, run_name)


def run_name_for(options, preset):
    """--run_name; continuing, the name of the run continued (its checkpoints record it); else the
    model type and the time."""
    if options.run_name:
        return options.run_name
    for _, checkpoint in reversed(ckpt.list_checkpoints(options.model_dir) if options.do_continue else []):
        try:
            name = ckpt.read_record(checkpoint).run_name
        except (OSError, ValueError):  # a damaged checkpoint: resume() says which, and uses an older one
            continue
        if name:
            return name
    return f"{preset.model_type}-{datetime.now():%Y%m%d-%H%M%S}"


def train(options, preset, family, accelerator, stops, run_name):
    """The run, in the model directory it owns."""
    main = accelerator.is_main_process

    # data: one process per node builds, the others wait and load; the tokenizer is opened once
    encoder = open_encoder(options.tokenizer_dir) if options.tokenizer_dir else None
    with accelerator.local_main_process_first():
        dataset_dir, validation_dir = prepare(options, preset, show_progress=accelerator.is_local_main_process,
                                              encoder=encoder)
    dataset, info = load_examples(dataset_dir, ExampleSpec.from_preset(preset, options.seed,
                                                                       options.validation_split_percentage))
    tokenizer_dir = options.tokenizer_dir or info["tokenizer_dir"]
    encoder = encoder or open_encoder(tokenizer_dir)
    vocab = vocabulary_for(preset, encoder)

    my_batch = rank_batch_size(preset, options.node_rank)
    rank_batches = gather_rank_batches(accelerator, my_batch)
    set_deepspeed_micro_batch(accelerator, my_batch)

    model = build_model(family, preset, vocab, options.seed)
    optimizer = optimizer_for(model, preset)
    scheduler = scheduler_for(optimizer, preset)
    model, optimizer = accelerator.prepare(model, optimizer)
    # The scheduler is stepped by hand once per optimizer step (accelerate's wrapper steps it
    # once per process), so the learning rate follows the same curve on any number of ranks.
    accelerator.register_for_checkpointing(scheduler)

    record = RunRecord(model_type=preset.model_type, family=family.name, seed=options.seed,
                       global_batch=sum(rank_batches), rank_batches=rank_batches,
                       masking=options.masking_mode(preset), tokenizer=tokenizer_fingerprint(tokenizer_dir),
                       parameters=preset.raw, validation_split_percentage=options.validation_split_percentage or 0,
                       examples=examples_identity(dataset_dir), mask_draws="counter")
    resumed = resume(accelerator, options, record)
    # a continued run keeps the mask draws it began with (older runs: per-example generators)
    record = dataclasses.replace(record, run_name=run_name, step=resumed.step if resumed else 0,
                                 best_eval_loss=resumed.best_eval_loss if resumed else None,
                                 mask_draws=resumed.draws_masks_by() if resumed else record.mask_draws)
    accelerator.init_trackers(run_name, config=run_config(preset, options))

    tokenizer_files = TokenizerFiles(tokenizer_dir, family, encoder)
    collator = family.make_collator(preset, vocab, options.seed, options.masking_mode(preset), record.mask_draws)
    evaluator = None
    if validation_dir is not None:
        evaluator = Evaluator(validation_dir, options.validation_split_percentage, family, preset, vocab, options,
                              my_batch, record.mask_draws, best=record.best_eval_loss)
    sampler = GlobalBatchSampler(len(dataset), rank_batches, accelerator.process_index, options.seed,
                                 start_step=record.step * preset.accumulation_steps)
    loader = training_loader(dataset, sampler, collator, options, stops)
    writer = ModelWriter(accelerator, model, family, record, tokenizer_files)
    training = Training(accelerator, family, preset, model, optimizer, scheduler, loader, writer, options.model_dir,
                        stops, evaluator, device_peak_tflops(options.peak_tflops))

    if main:  # a job script requeues only a run that says "stopped"; one that crashes keeps saying this
        write_status(options.model_dir, "running", record.step)
    bar = tqdm(total=preset.train_steps, initial=record.step, desc="Pretraining", disable=not main,
               dynamic_ncols=True)
    try:
        record, stopped_at = train_loop(training, record, bar)
    finally:
        bar.close()  # before any error message, so the message is the last line
    if stopped_at is not None:
        stop_run(accelerator, options, stops, record, stopped_at)

    accelerator.wait_for_everyone()
    ckpt.write_final_model(writer, options.model_dir, evaluator.last if evaluator else None)
    if main:
        write_model_card(options.model_dir, family, preset, info, record, evaluator)
        write_status(options.model_dir, "finished", record.step)
        print(f"model saved to {options.model_dir}")
    accelerator.end_training()


def training_loader(dataset, sampler, collator, options, stops):
    """Batches read, expanded and masked in --dataloader_num_workers processes, a few steps ahead
    of the GPU; the same batches with any number of workers (masks depend on the example alone)."""
    workers = options.dataloader_num_workers
    workers = default_loader_workers() if workers is None else workers
    # A generator of its own: creating a loader iterator otherwise draws from the global torch
    # RNG, which would shift every dropout mask after a resume.
    return torch.utils.data.DataLoader(
        IndexedExamples(dataset), batch_sampler=sampler, collate_fn=collator, num_workers=workers,
        persistent_workers=workers > 0, prefetch_factor=LOADER_PREFETCH if workers else None,
        worker_init_fn=functools.partial(start_loader_worker, stops.signals) if workers else None,
        pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(options.seed))


def stop_run(accelerator, options, stops, record, checkpoint):
    """After a stop request: the run's one line, its status file, and the exit code on every rank."""
    accelerator.end_training()
    if not accelerator.is_main_process:
        if stops.reason is not None:
            print(f"rank {accelerator.process_index}: {stops.reason} received", flush=True)
        raise Stopped(None, EXIT_STOPPED)
    reason = stops.stop_reason()
    after = f", {stops.seconds_since_signal():.1f} s after the signal" if stops.received_at is not None else ""
    write_status(options.model_dir, "stopped", record.step, checkpoint=checkpoint, reason=reason)
    raise Stopped(f"stopped by {reason} at step {record.step}: {checkpoint} written{after}; exit code "
                  f"{EXIT_STOPPED}. Continue with the same command and --do_continue "
                  f"({os.path.join(options.model_dir, STATUS_FILE)} says \"stopped\")", EXIT_STOPPED)


def resume(accelerator, options, record):
    """--do_continue: load the newest intact checkpoint into the prepared objects; returns its RunRecord
    (None when starting afresh), refusing one of another run than ``record``. Also readies model_dir:
    the debris of killed runs is removed and, with --overwrite_output_dir, the old checkpoints."""
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
        return None
    saved = ckpt.read_record(checkpoint)
    different = saved.differences(record, allowed=("examples",) if options.allow_data_change else ())
    if different:
        raise UserError(f"--do_continue: {checkpoint} was trained with another setup ({'; '.join(different)}); restore "
                        "it to continue, or start a new run with --overwrite_output_dir or another --model_dir")
    try:
        accelerator.load_state(os.path.join(checkpoint, ckpt.ACCELERATE_DIR))
    except (RuntimeError, ValueError, KeyError) as error:  # e.g. weights of another shape
        raise UserError(f"--do_continue: {checkpoint} does not fit the model of this preset "
                        f"({str(error).splitlines()[0][:200]}); restore the preset it was trained with") from None
    started = options.process_start
    accelerator.print(f"resumed from {checkpoint} at step {saved.step}"
                      + (f", {time.time() - started:.1f} s after the process started" if started else ""))
    return saved


def run_evaluation(options, preset):
    """--do_eval: score a trained model directory (final or checkpoint) on the held-out examples."""
    if not options.model_dir or not os.path.isfile(os.path.join(options.model_dir, PRESET_FILE)):
        raise UserError(f"--do_eval needs --model_dir with a model trained by run_pretraining.py "
                        f"({options.model_dir or 'none given'} holds no {PRESET_FILE})")
    preset = apply_flag_overrides(preset, options)
    family = family_of(preset)
    set_cpu_threads()
    accelerator = make_accelerator(preset, options)
    encoder = open_encoder(options.tokenizer_dir) if options.tokenizer_dir else None
    with accelerator.local_main_process_first():
        _, validation_dir = prepare(options, preset, show_progress=accelerator.is_local_main_process, encoder=encoder)
    if validation_dir is None:
        raise UserError("--do_eval needs held-out examples: --validation_split_percentage (as in training) or "
                        "--validation_file")
    _, info = load_examples(validation_dir)
    tokenizer_dir = options.tokenizer_dir or info["tokenizer_dir"]
    trained = check_trained_as(options, preset, family, tokenizer_dir)
    vocab = vocabulary_for(preset, encoder or open_encoder(tokenizer_dir))
    model = load_trained_model(family, options.model_dir)
    model = accelerator.prepare(model)
    evaluator = Evaluator(validation_dir, options.validation_split_percentage, family, preset, vocab, options,
                          rank_batch_size(preset, options.node_rank), trained.draws_masks_by())
    results = evaluator.run(accelerator, model, step=None)
    if accelerator.is_main_process:
        write_results(options.model_dir, results)
        print("eval " + "  ".join(f"{k} {v:.4f}" for k, v in results.items() if isinstance(v, float)))
        print(f"written to {os.path.join(options.model_dir, RESULTS_FILE)}")


def check_trained_as(options, preset, family, tokenizer_dir):
    """--do_eval scores a model as it was trained: the same preset, tokenizer and masking. Returns the
    model's record."""
    with open(os.path.join(options.model_dir, PRESET_FILE), encoding="utf-8") as f:
        trained = RunRecord.from_json(json.load(f))
    now = RunRecord(model_type=preset.model_type, family=family.name, seed=options.seed,
                    masking=options.masking_mode(preset), tokenizer=tokenizer_fingerprint(tokenizer_dir),
                    parameters=preset.raw)
    different = trained.differences(now)
    if different:
        raise UserError(f"--do_eval: {options.model_dir} was trained with another setup ({'; '.join(different)}): "
                        f"give the preset ({trained.model_type}) and flags it was trained with")
    return trained


def train_loop(training, record, bar):
    """Train from ``record.step`` to the preset's train-steps, or until a stop request; returns the
    record at the end and, after a stop, the checkpoint written (else None)."""
    t, accelerator, model, preset = training, training.accelerator, training.model, training.preset
    parameters = [p for p in model.parameters() if p.requires_grad]
    weights = t.family.loss_weights(preset)
    step_flops = t.family.flops(accelerator.unwrap_model(model))
    meter, watch = LossMeter(), NonFiniteWatch(accelerator.device)
    step, last_train = record.step, record.last_train
    examples_seen = step * preset.accumulation_steps * record.global_batch
    grad_norm = torch.tensor(0.0)

    def progress():
        best = t.evaluator.best if t.evaluator is not None else record.best_eval_loss
        return dataclasses.replace(record, step=step, examples_seen=examples_seen, last_train=last_train,
                                   best_eval_loss=best)

    agreement = Agreement(accelerator.device)
    model.train()
    batches = iter(t.loader)
    t.stops.start_training()
    while step < preset.train_steps:
        waiting = time.perf_counter()  # the share of time spent here is logged as data_wait_ratio
        batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in next(batches).items()}
        meter.data_seconds += time.perf_counter() - waiting
        with accelerator.accumulate(model):
            with accelerator.autocast():
                losses = model(batch)
            names, totals, loss, global_loss, requests = reduce_losses(accelerator, losses, batch, weights,
                                                                       t.stops.local_requests())
            agreement.received(requests)
            # DDP averages the gradients over the ranks: scaled back, the update is the global mean's
            accelerator.backward(loss * accelerator.num_processes)
            watch.update(global_loss, step + 1)
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(parameters, 1.0)
            t.optimizer.step()
            t.optimizer.zero_grad()
        meter.add(names, totals, step_flops(batch) * accelerator.num_processes)
        examples_seen += record.global_batch
        if not accelerator.sync_gradients:
            continue
        t.scheduler.step()
        step += 1
        bar.update(1)
        t.stops.step_done()
        stop, clock_save = agreement.read()  # what every rank asked for (pretraining/stopping.py)
        last = step == preset.train_steps
        stop = stop and not last
        logging_step = step % preset.logging_steps == 0 or last
        saving_step = step % preset.save_steps == 0 or last or clock_save or stop
        eval_step = t.evaluator is not None and (step % t.evaluator.every == 0 or last)
        if not (logging_step or saving_step or eval_step):
            continue
        watch.check(t.model_dir)  # the loop's only host sync, before any log or checkpoint
        if logging_step:
            last_train = log_figures(accelerator, bar, meter, weights, step, t.scheduler, grad_norm, examples_seen,
                                     t.peak_tflops)
            meter = LossMeter()
        if eval_step:
            meter.started += run_evaluator(accelerator, model, t.evaluator, step, bar)  # speed figures: training alone
        if saving_step:
            started = time.time()
            checkpoint = ckpt.save_checkpoint(accelerator, t.model_dir, t.writer, progress(), preset.save_total_limit,
                                              t.evaluator.last if t.evaluator is not None else None)
            t.stops.saved(time.time() - started)
        if stop:
            return progress(), checkpoint
    return progress(), None


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
