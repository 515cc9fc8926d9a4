"""One short run that checks every GPU path and prints one table.

    python benchmarks/gpu_check.py --prepare_only [--work DIR]     # here: tokenizer and examples (needs MeCab)
    python benchmarks/gpu_check.py [--work DIR] [--minutes 6]      # on the GPU: the check

scripts/gpu_bundle.sh makes DIR and the wheels a bare GPU machine lacks in one command, and says
how to run the check there. Without CUDA the same command runs at tiny sizes (--tiny is implied);
tests/test_gpu_check.py runs it so, so that it cannot rot.

Rows of the table:
- speed: each family's base-size preset (the first "-base" preset of parameter.json, else "-small")
  on batches of about 16k tokens from its own examples and collator, through the training loader
  with 2 workers; bf16 autocast, eager and with torch.compile: tokens/s without padding, TFLOP/s
  (pretraining/flops.py), MFU, peak memory, and the share of time spent waiting for a batch;
- precision: 30 steps in bf16 beside the same 30 in float32 (same weights, same batches, AdamW at
  1e-4); agreement: every step's loss within PRECISION_TOLERANCE of float32's. The same steps in
  fp16 with a gradient scaler are shown beside them, with the steps the scaler skipped (an
  overflow skips a step, so fp16 is reported, not judged: T5 is known to overflow in fp16);
- sharded: run_pretraining.py through `accelerate launch` with accelerate_configs' FSDP, ZeRO-2 and
  ZeRO-3 files and one process: 4 steps, then --do_continue to 6; the final directory loads with
  transformers and its weights equal those gathered from the last checkpoint's sharded state.
The compile rows run last and only as the time budget (--minutes) allows; a row that fails shows
its error and the others still run.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

PRECISION_STEPS, PRECISION_TOLERANCE = 30, 0.02  # relative difference of a step's loss from float32's
HALF = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
SPEED_TOKENS, SPEED_STEPS, WARMUP_STEPS = 16384, 10, 3  # tokens a step on the GPU (TINY_TOKENS without)
TINY_TOKENS = 512
EXAMPLE_MB = 2  # of text for the examples of each kind
COMPILE_SECONDS = 90  # what one compiled row is budgeted (compilation included)
TINY_KEYS = {"number-of-layers": 2, "hidden-size": 96, "embedding-size": 32, "ffn-inner-hidden-size": 192,
             "attention-heads": 6, "key-value-heads": 2, "projection-size": 32, "local-attention": 16,
             "block-size": 1, "sequence-length": 64}
SHARDED_CONFIGS = (("FSDP", "fsdp.yaml"), ("ZeRO-2", "deepspeed_zero2.yaml"), ("ZeRO-3", "deepspeed_zero3.yaml"))


def base_presets(parameter_file):
    """{family: its base-size preset's name}: the first "-base" preset of a family, else its first "-small"."""
    from pretraining.presets import load_presets, parse_preset

    chosen = {}
    presets = load_presets(parameter_file)
    for suffix in ("-base", "-small"):
        for name, raw in presets.items():
            if name.endswith(suffix):
                chosen.setdefault(parse_preset(name, raw).family, name)
    return chosen


def check_preset(name, parameter_file, tiny):
    """The preset as checked: tiny sizes on a machine without a GPU."""
    from pretraining.presets import load_preset, parse_preset

    preset = load_preset(parameter_file, name)
    if not tiny:
        return preset
    raw = dict(preset.raw, **{k: v for k, v in TINY_KEYS.items() if k in preset.raw or k == "sequence-length"})
    return parse_preset(name, raw)


def examples_dir(work, spec):
    return os.path.join(work, "examples", f"{spec.kind}-{spec.sequence_length}")


def sharded_preset(tiny):
    """A small BERT for the sharded runs: the check is of saving and resuming, not of speed."""
    if tiny:
        sizes = {k: TINY_KEYS[k] for k in ("number-of-layers", "hidden-size", "ffn-inner-hidden-size", "attention-heads",
                                           "sequence-length")}
    else:
        sizes = {"number-of-layers": 4, "hidden-size": 256, "ffn-inner-hidden-size": 1024, "attention-heads": 4,
                 "sequence-length": 128}
    return dict(sizes, **{"family": "bert", "batch-size": {"-1": 8}, "train-steps": 4, "save-steps": 2,
                          "logging-steps": 1, "learning-rate": 1e-4, "bf16": not tiny})


def prepare(work, corpora, tiny):
    """The tokenizer and every example set the check reads (MeCab runs here, not on the GPU machine)."""
    from pretraining.data.build import ExampleSpec
    from pretraining.data.cache import prepare_examples
    from pretraining.presets import parse_preset
    from tokenizer.train import TokenizerSettings, train_tokenizer

    tokenizer_dir = os.path.join(work, "tokenizer")
    if not os.path.isdir(tokenizer_dir):
        train_tokenizer([corpora[0]], tokenizer_dir, TokenizerSettings(vocab_size=8000 if tiny else 32768),
                        show_progress=False)
    parameter_file = os.path.join(ROOT, "parameter.json")
    presets = [check_preset(name, parameter_file, tiny) for name in base_presets(parameter_file).values()]
    presets.append(parse_preset("check-sharded", sharded_preset(tiny)))
    for spec in {ExampleSpec.from_preset(preset, 42) for preset in presets}:
        if not os.path.isdir(examples_dir(work, spec)):
            prepare_examples([corpora[1]], tokenizer_dir, spec, dataset_dir=examples_dir(work, spec), show_progress=False)
    return tokenizer_dir


class Steps:
    """A family's model trained step by step on its own batches, as training makes them."""

    def __init__(self, work, family, preset, rows, compile_model, workers, seed=0):
        from pretraining.data.build import ExampleSpec
        from pretraining.data.cache import load_examples
        from pretraining.data.sampler import GlobalBatchSampler
        from pretraining.families import vocabulary_for
        from pretraining.modeling import build_model, optimizer_for
        from pretraining.train import open_encoder, training_loader

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        spec = ExampleSpec.from_preset(preset, 42)
        dataset, _ = load_examples(examples_dir(work, spec), spec)
        vocab = vocabulary_for(preset, open_encoder(os.path.join(work, "tokenizer")))
        collator = family.make_collator(preset, vocab, seed, preset.masking or "token", "counter")
        options = types.SimpleNamespace(dataloader_num_workers=workers, seed=seed)
        self.batches = iter(training_loader(dataset, GlobalBatchSampler(len(dataset), [rows], 0, seed), collator,
                                            options, types.SimpleNamespace(signals=())))
        with self.device:  # made on the GPU: a billion parameters are initialised in seconds, not minutes
            self.model = build_model(family, preset, vocab, seed).to(self.device).train()
        self.flops = family.flops(self.model)
        self.weights = family.loss_weights(preset)
        self.optimizer = optimizer_for(self.model, preset)
        for group in self.optimizer.param_groups:
            group["lr"] = 1e-4
        self.forward = torch.compile(self.model) if compile_model else self.model

    def run(self, steps, precision):
        """Train ``steps`` steps in ``precision`` (a HALF key: fp16 with a gradient scaler, as accelerate
        does); returns (losses as tensors, real tokens, model FLOPs, seconds waiting for data)."""
        dtype = HALF[precision]
        scaler = torch.amp.GradScaler(self.device.type, enabled=dtype is torch.float16)
        losses, tokens, flops, waiting = [], 0, 0.0, 0.0
        self.skipped = 0  # fp16 steps the scaler skipped after an overflow
        for _ in range(steps):
            started = time.perf_counter()
            batch = {k: v.to(self.device, non_blocking=True) for k, v in next(self.batches).items()}
            waiting += time.perf_counter() - started
            with torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                parts = self.forward(batch)
            loss = sum(self.weights.get(name, 1.0) * total / count.clamp(min=1)
                       for name, (total, count) in parts.items() if not name.startswith("acc/"))
            scaler.scale(loss).backward()
            scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            scale = scaler.get_scale()
            scaler.step(self.optimizer)
            scaler.update()
            self.skipped += scaler.get_scale() < scale
            self.optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
            flops += self.flops(batch)
        return losses, tokens, flops, waiting


def synchronize():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def step_tokens(tiny):
    return TINY_TOKENS if tiny else SPEED_TOKENS


def speed_row(work, family, preset, tiny, compile_model, peak_tflops):
    rows = max(1, step_tokens(tiny) // preset.sequence_length)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    steps = Steps(work, family, preset, rows, compile_model, workers=2)
    steps.run(WARMUP_STEPS, "bf16")  # compilation, the workers' start, the allocator
    synchronize()
    started = time.perf_counter()
    losses, tokens, flops, waiting = steps.run(SPEED_STEPS, "bf16")
    synchronize()
    seconds = time.perf_counter() - started
    figures = {"tokens/s": f"{tokens / seconds:,.0f}", "TFLOP/s": f"{flops / seconds / 1e12:.3g}",
               "MFU": f"{flops / seconds / 1e12 / peak_tflops:.1%}" if peak_tflops else "-",
               "peak GiB": f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if torch.cuda.is_available() else "-",
               "data wait": f"{waiting / seconds:.0%}", "loss": f"{float(losses[-1]):.3f}"}
    del steps
    return figures


def precision_row(work, family, preset, tiny):
    """The same 30 steps (weights, batches) in float32, bf16 and fp16."""
    rows = max(1, step_tokens(tiny) // 4 // preset.sequence_length)
    curves, skipped = {}, 0
    for precision in HALF if torch.cuda.is_available() else ("fp32", "bf16"):  # fp16 trains on GPUs only
        steps = Steps(work, family, preset, rows, False, workers=0)
        curves[precision] = torch.stack(steps.run(PRECISION_STEPS, precision)[0]).float().cpu()
        skipped = steps.skipped if precision == "fp16" else skipped

    def worst(precision):
        return float(((curves[precision] - curves["fp32"]).abs() / curves["fp32"].abs().clamp(min=1e-6)).max())

    def ends(precision):
        return f"{curves[precision][0]:.3f} / {curves[precision][-1]:.3f}"

    figures = {"fp32 loss 1/30": ends("fp32"), "bf16 loss 1/30": ends("bf16"), "bf16 worst step": f"{worst('bf16'):.2%}",
               f"within {PRECISION_TOLERANCE:.0%}": "yes" if worst("bf16") <= PRECISION_TOLERANCE else "NO"}
    if "fp16" not in curves:
        return dict(figures, fp16="not run: fp16 training needs a GPU (run_pretraining.py trains in float32 without one)")
    return dict(figures, **{"fp16 loss 1/30": ends("fp16"), "fp16 worst step": f"{worst('fp16'):.2%}",
                            "fp16 skipped": str(skipped)})


def launch(config, work, model_dir, dataset_dir, *extra):
    """run_pretraining.py through accelerate launch, one process; returns its output (raises on failure)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               os.path.join(ROOT, "accelerate_configs", config), "--num_processes", "1", "--num_machines", "1",
               "--quiet", os.path.join(ROOT, "run_pretraining.py"),
               "--parameter_file", os.path.join(work, "sharded.json"), "--model_type", "check-sharded",
               "--tokenizer_dir", os.path.join(work, "tokenizer"), "--model_dir", model_dir,
               "--logging_dir", model_dir + "-runs", "--dataset_dir", dataset_dir,
               "--dataloader_num_workers", "0", *extra]
    result = subprocess.run(command, capture_output=True, text=True, cwd=work)
    output = result.stdout + result.stderr
    if result.returncode != 0:  # the project's one-line error, else the output's last line
        lines = [line for line in output.splitlines() if line.strip() and not line.startswith(("=", "-"))]
        errors = [line for line in lines if line.startswith("error:")]
        raise RuntimeError(f"exit {result.returncode}: {(errors or lines or [''])[-1]}")
    return output


def gathered_weights(checkpoint):
    """The full float weights of a checkpoint's accelerate state, sharded or not."""
    from safetensors.torch import load_file

    from pretraining.checkpoints import ACCELERATE_DIR

    state = os.path.join(checkpoint, ACCELERATE_DIR)
    fsdp = os.path.join(state, "pytorch_model_fsdp_0")
    if os.path.isdir(fsdp):  # a sharded (distributed checkpoint) state: accelerate's own merge
        from accelerate.utils import merge_fsdp_weights

        merged = checkpoint + "-merged"
        merge_fsdp_weights(fsdp, merged, safe_serialization=True)
        return load_file(os.path.join(merged, "model.safetensors"))
    if glob.glob(os.path.join(state, "pytorch_model", "*")) or os.path.isfile(os.path.join(state, "latest")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(state)
    if os.path.isfile(os.path.join(state, "model.safetensors")):
        return load_file(os.path.join(state, "model.safetensors"))
    return torch.load(os.path.join(state, "pytorch_model.bin"), map_location="cpu", weights_only=True)


def sharded_row(work, name, config, tiny):
    """Train, checkpoint, continue, and compare the final directory with the gathered weights."""
    from safetensors.torch import load_file
    from transformers import AutoModelForPreTraining

    from pretraining.data.build import ExampleSpec
    from pretraining.presets import parse_preset

    if "deepspeed" in config:
        if not torch.cuda.is_available():
            return {"result": "not run: DeepSpeed needs CUDA"}
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            return {"result": "not run: deepspeed is not installed"}
    model_dir = os.path.join(work, "sharded", name)
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.rmtree(model_dir + "-runs", ignore_errors=True)
    preset = sharded_preset(tiny)
    dataset_dir = examples_dir(work, ExampleSpec.from_preset(parse_preset("check-sharded", preset), 42))
    write_parameters(work, preset)
    launch(config, work, model_dir, dataset_dir)
    write_parameters(work, dict(preset, **{"train-steps": 6}))
    output = launch(config, work, model_dir, dataset_dir, "--do_continue")
    resumed = "resumed from" in output and "checkpoint-4" in output
    AutoModelForPreTraining.from_pretrained(model_dir)  # loads with plain transformers
    final = load_file(os.path.join(model_dir, "model.safetensors"))
    gathered = {k.removeprefix("module.").removeprefix("_orig_mod."): v
                for k, v in gathered_weights(os.path.join(model_dir, "checkpoint-6")).items()}
    missing = sorted(set(final) - set(gathered))
    equal = not missing and all(torch.equal(final[k], gathered[k].to(final[k].dtype)) for k in final)
    return {"result": "ok" if resumed and equal else "FAILED",
            "resumed at 4": "yes" if resumed else "NO",
            "final equals gathered": "yes" if equal else f"NO{' (missing ' + missing[0] + ')' if missing else ''}",
            "tensors": str(len(final))}


def write_parameters(work, preset):
    with open(os.path.join(work, "sharded.json"), "w", encoding="utf-8") as f:
        json.dump({"check-sharded": preset}, f)


class Table:
    """Rows printed as they come, then all together at the end."""

    def __init__(self):
        self.rows = []

    def add(self, part, name, figures):
        self.rows.append((part, name, figures))
        print(f"{part:9} {name:28} " + "  ".join(f"{k} {v}" for k, v in figures.items()), flush=True)

    def attempt(self, part, name, function, *args):
        try:
            figures = function(*args)
        except Exception as error:  # noqa: BLE001 (one failed path must not hide the others)
            figures = {"result": f"FAILED: {type(error).__name__}: {str(error).strip()[:300]}"}
        self.add(part, name, figures)

    def markdown(self):
        lines = ["| part | what | figures |", "| --- | --- | --- |"]
        lines += [f"| {part} | {name} | " + "; ".join(f"{k} {v}" for k, v in figures.items()) + " |"
                  for part, name, figures in self.rows]
        return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=os.path.join(ROOT, ".gpu_bundle", "work"),
                        help="the tokenizer and examples (made by --prepare_only), and the sharded runs' folders")
    parser.add_argument("--prepare_only", action="store_true", help="make the tokenizer and examples, then stop")
    parser.add_argument("--corpus", help="text to prepare from (default: sample_corpus/ when tiny, else "
                                         "../shared/corpus/aozora)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the default without CUDA)")
    parser.add_argument("--gpu_sizes", action="store_true",
                        help="with --prepare_only: prepare for a GPU's sizes on a machine without one")
    parser.add_argument("--minutes", type=float, default=6.0, help="time budget: compile rows run while it lasts")
    parser.add_argument("--families", help="comma-separated families (default: all)")
    parser.add_argument("--parts", default="speed,precision,sharded,compile")
    parser.add_argument("--compile_families", help="comma-separated families of the compile rows (default: all checked)")
    parser.add_argument("--peak_tflops", type=float, help="the device's dense bf16 peak (default: known GPUs)")
    parser.add_argument("--markdown", help="also write the table as Markdown to this file")
    args = parser.parse_args()
    started = time.perf_counter()
    tiny = args.tiny or not (torch.cuda.is_available() or args.gpu_sizes and args.prepare_only)
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    os.environ.setdefault("JA_PRETRAINING_CACHE", os.path.join(work, "cache"))
    if args.prepare_only:
        prepare(work, (args.corpus, args.corpus) if args.corpus else default_corpora(work, tiny), tiny)
        print(f"prepared {work}")
        return
    if not os.path.isdir(os.path.join(work, "tokenizer")):
        sys.exit(f"gpu_check: {work} holds no prepared tokenizer: run with --prepare_only first "
                 "(or scripts/gpu_bundle.sh)")

    from pretraining.families import FAMILIES
    from pretraining.flops import device_peak_tflops

    parameter_file = os.path.join(ROOT, "parameter.json")
    presets = base_presets(parameter_file)
    if args.families:
        presets = {f: presets[f] for f in args.families.split(",")}
    parts = set(args.parts.split(","))
    peak = device_peak_tflops(args.peak_tflops)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (tiny sizes)"
    print(f"{device}, torch {torch.__version__}; peak {peak or 'unknown'} TFLOP/s", flush=True)
    table = Table()
    checked = {family: check_preset(name, parameter_file, tiny) for family, name in presets.items()}
    if "speed" in parts:
        for family, preset in checked.items():
            table.attempt("speed", f"{presets[family]} eager", speed_row, work, FAMILIES[family], preset, tiny, False, peak)
    if "precision" in parts:
        for family, preset in checked.items():
            table.attempt("precision", presets[family], precision_row, work, FAMILIES[family], preset, tiny)
    if "sharded" in parts:
        for name, config in SHARDED_CONFIGS:
            table.attempt("sharded", f"{name} ({config})", sharded_row, work, name.lower(), config, tiny)
    if "compile" in parts:
        compiled = args.compile_families.split(",") if args.compile_families else list(checked)
        for family, preset in ((f, p) for f, p in checked.items() if f in compiled):
            left = args.minutes * 60 - (time.perf_counter() - started)
            if left < COMPILE_SECONDS:
                table.add("speed", f"{presets[family]} compiled", {"result": f"not run: {left:.0f} s of the budget left"})
                continue
            table.attempt("speed", f"{presets[family]} compiled", speed_row, work, FAMILIES[family], preset, tiny, True, peak)
    print(f"\n{device}: {time.perf_counter() - started:.0f} s\n\n{table.markdown()}")
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(table.markdown() + "\n")
    failed = [row for row in table.rows if "FAILED" in str(row[2]) or "NO" in row[2].values()]
    sys.exit(1 if failed else 0)


def default_corpora(work, tiny):
    """(text for the tokenizer, text for the examples): sample_corpus/ at tiny sizes; else the whole
    Aozora corpus for the tokenizer (a 32k vocabulary, as the base presets have) and its first
    EXAMPLE_MB for the examples (enough for the steps the check takes, within the bundle's size)."""
    if tiny:
        sample = os.path.join(ROOT, "sample_corpus", "sample.txt")
        return sample, sample
    from benchmarks.common import aozora_corpus

    whole = aozora_corpus(work)
    part = os.path.join(work, "aozora-part.txt")
    with open(whole, "rb") as source, open(part, "wb") as target:
        data = source.read(EXAMPLE_MB * 2**20)
        target.write(data[:data.rfind(b"\n\n") + 1])
    return whole, part


if __name__ == "__main__":
    main()
