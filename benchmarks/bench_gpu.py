"""Training-step throughput on one device: tokens/s, model FLOPs utilisation, peak memory.

    python benchmarks/bench_gpu.py                 # on a GPU: bert-base seq 512, gpt2-small seq 1024, bf16
    python benchmarks/bench_gpu.py --tiny          # the same path at tiny sizes (what a CPU can run)

Each model runs the project's training forward (pretraining/families/) with AdamW, clipping
and bf16 autocast, without and with torch.compile. MFU divides model FLOPs (pretraining/flops.py)
by the device's peak (a table of known GPUs, or --peak_tflops). Random ids: no corpus needed.
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_step import batches  # noqa: E402
from pretraining.modeling import install  # noqa: E402
from pretraining.flops import device_peak_tflops  # noqa: E402
from pretraining.presets import parse_preset  # noqa: E402
from pretraining.families import FAMILIES, Vocabulary  # noqa: E402

COMMON = {"learning-rate": 1e-4, "train-steps": 1, "save-steps": 1, "logging-steps": 1, "dropout": 0.1}
FULL = {
    "bert": dict(COMMON, **{"number-of-layers": 12, "hidden-size": 768, "ffn-inner-hidden-size": 3072,
                            "attention-heads": 12, "sequence-length": 512, "batch-size": {"-1": 32}}),
    "gpt2": dict(COMMON, **{"number-of-layers": 12, "hidden-size": 768, "ffn-inner-hidden-size": 3072,
                            "attention-heads": 12, "sequence-length": 1024, "batch-size": {"-1": 16}}),
}
TINY = {name: dict(values, **{"number-of-layers": 2, "hidden-size": 64, "ffn-inner-hidden-size": 256,
                              "attention-heads": 2, "sequence-length": 128, "batch-size": {"-1": 4}})
        for name, values in FULL.items()}


def run(family, values, vocab, steps, compile_model, device):
    spec = FAMILIES[family]
    torch.manual_seed(0)
    preset = parse_preset(f"{family}-bench", values)
    model = spec.create(preset, vocab).to(device).train()
    install(model, spec.training_forward)
    step_flops = spec.flops(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    if compile_model:
        model = torch.compile(model)
    rows, length = values["batch-size"]["-1"], values["sequence-length"]
    data = [{k: v.to(device) for k, v in b.items()} for b in batches(family, vocab, steps + 3, rows, length)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    flops, started = 0.0, None
    for k, batch in enumerate(data):
        if k == 3:  # warm-up (and compilation) done
            if device.type == "cuda":
                torch.cuda.synchronize()
            started, flops = time.perf_counter(), 0.0
        with torch.autocast(device.type, dtype=torch.bfloat16):
            losses = model(batch)
        loss = sum(total / count.clamp(min=1) for total, count in losses.values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        flops += step_flops(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens = rows * length * steps
    figures = {"tokens_per_second": tokens / seconds, "tflops_per_second": flops / seconds / 1e12,
               "loss": float(loss.detach())}
    if device.type == "cuda":
        figures["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the default without a GPU)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--peak_tflops", type=float)
    parser.add_argument("--families", default="bert,gpt2")
    parser.add_argument("--no_compile", action="store_true", help="skip the torch.compile runs")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sizes = TINY if args.tiny or device.type == "cpu" else FULL
    peak = device_peak_tflops(args.peak_tflops)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, bf16 autocast, {args.steps} timed steps"
          f"{'' if peak else ' (peak unknown: pass --peak_tflops for MFU)'}")
    vocab = Vocabulary(size=32768, pad_id=0, cls_id=2, sep_id=3, mask_id=4)
    for family in args.families.split(","):
        values = sizes[family]
        for compile_model in (False, True) if not args.no_compile else (False,):
            figures = run(family, values, vocab, args.steps, compile_model, device)
            line = (f"{family} {values['number-of-layers']}x{values['hidden-size']} seq {values['sequence-length']} "
                    f"batch {values['batch-size']['-1']}{' compiled' if compile_model else ''}: "
                    f"{figures['tokens_per_second']:,.0f} tokens/s, {figures['tflops_per_second']:.3g} TFLOP/s")
            if peak:
                line += f", MFU {figures['tflops_per_second'] / peak:.1%}"
            if "peak_memory_gib" in figures:
                line += f", peak memory {figures['peak_memory_gib']:.1f} GiB"
            print(line, flush=True)


if __name__ == "__main__":
    main()
