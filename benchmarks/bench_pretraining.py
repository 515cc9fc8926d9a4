"""Pretraining speed: run_pretraining.py against the stock transformers Trainer, side by side.

Same model (BertForPreTraining, 4 layers x 256 hidden x 4 heads), same batch (16), same
data (Aozora NSP examples of length 128), torch on the machine's cores. Prints s/step and
tokens/s of both, the share of a step our data loading takes, and how long a resume takes.

    python benchmarks/bench_pretraining.py [--steps 40]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import ROOT, aozora_corpus, timed_command  # noqa: E402

PRESET = {"number-of-layers": 4, "hidden-size": 256, "ffn-inner-hidden-size": 1024, "attention-heads": 4,
          "sequence-length": 128, "warmup-steps": 10, "learning-rate": 1e-4, "batch-size": {"-1": 16},
          "save-steps": 40, "dropout": 0.1}

TRAINER_SCRIPT = r"""
import json, sys, time, torch
from pretraining.data.cache import load_examples
from transformers import (AutoTokenizer, BertConfig, BertForPreTraining, DataCollatorForLanguageModeling, Trainer,
                          TrainerCallback, TrainingArguments)
examples, tokenizer_dir, steps, warm = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
dataset = load_examples(examples)[0].remove_columns(["word_ids"])
config = BertConfig(vocab_size=len(tokenizer), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=1024, max_position_embeddings=512)
model = BertForPreTraining(config)
times = {}
class Clock(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        times[state.global_step] = time.perf_counter()
args = TrainingArguments(output_dir="/tmp/bench-trainer", per_device_train_batch_size=16, max_steps=steps,
                         learning_rate=1e-4, warmup_steps=10, logging_steps=1000, save_strategy="no", report_to=[],
                         use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, max_grad_norm=1.0)
Trainer(model=model, args=args, train_dataset=dataset, data_collator=DataCollatorForLanguageModeling(tokenizer),
        callbacks=[Clock()]).train()
print(json.dumps({"s_per_step": (times[steps] - times[warm]) / (steps - warm)}))
"""


ELECTRA = {"number-of-layers": 4, "hidden-size": 256, "embedding-size": 128, "ffn-inner-hidden-size": 1024,
           "attention-heads": 4, "generator-size": "1/4", "sequence-length": 128, "warmup-steps": 10,
           "learning-rate": 5e-4, "batch-size": {"-1": 16}, "save-steps": 100000, "dropout": 0.1}

# The same ELECTRA work written as a plain loop over transformers' classes: shared embeddings,
# tied generator head, sampling at masked positions, MLM + 50 x replaced-token-detection loss.
PLAIN_ELECTRA = r"""
import json, sys, time, torch, torch.nn.functional as F
from pretraining.data.cache import load_examples
from transformers import (AutoTokenizer, DataCollatorForLanguageModeling, ElectraConfig, ElectraForMaskedLM,
                          ElectraForPreTraining)
examples, tokenizer_dir, steps, warm = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
data = load_examples(examples)[0].remove_columns(["word_ids"])
common = dict(vocab_size=len(tokenizer), embedding_size=128, num_hidden_layers=4, max_position_embeddings=512)
generator = ElectraForMaskedLM(ElectraConfig(hidden_size=64, num_attention_heads=1, intermediate_size=256, **common))
discriminator = ElectraForPreTraining(ElectraConfig(hidden_size=256, num_attention_heads=4, intermediate_size=1024, **common))
generator.electra.embeddings = discriminator.electra.embeddings
generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight
parameters = list({id(p): p for m in (generator, discriminator) for p in m.parameters()}.values())
optimizer = torch.optim.AdamW(parameters, lr=5e-4, fused=True)
collate = DataCollatorForLanguageModeling(tokenizer)
loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True, collate_fn=collate)
times = []
for step, batch in zip(range(steps), loader):
    logits = generator(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    masked = batch["labels"] != -100
    mlm = F.cross_entropy(logits[masked], batch["labels"][masked])
    with torch.no_grad():
        sampled = torch.distributions.Categorical(logits=logits[masked]).sample()
        original = torch.where(masked, batch["labels"], batch["input_ids"])
        corrupted = batch["input_ids"].clone()
        corrupted[masked] = sampled
        replaced = (corrupted != original).float()
    judged = discriminator(input_ids=corrupted, attention_mask=batch["attention_mask"]).logits
    real = batch["attention_mask"].bool()
    loss = mlm + 50 * F.binary_cross_entropy_with_logits(judged[real], replaced[real])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()
    optimizer.zero_grad()
    times.append(time.perf_counter())
print(json.dumps({"s_per_step": (times[-1] - times[warm - 1]) / (steps - warm)}))
"""


def event_times(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(run_dir)
    events.Reload()
    return {e.step: e.wall_time for e in events.Scalars("loss")}


def data_loading_seconds(examples, tokenizer_dir, batches):
    """Time our sampler + dataset + collator alone for ``batches`` batches."""
    import torch

    from pretraining.data.cache import load_examples
    from pretraining.presets import parse_preset
    from pretraining.families import family_of, vocabulary_for
    from pretraining.data.sampler import GlobalBatchSampler, IndexedExamples
    from tokenizer.encoder import SubwordEncoder

    preset = parse_preset("bert-bench", dict(PRESET, **{"train-steps": batches, "logging-steps": 10}))
    dataset, _ = load_examples(examples)
    vocab = vocabulary_for(preset, SubwordEncoder(tokenizer_dir))
    collator = family_of(preset).make_collator(preset, vocab, 42, "whole-word")
    loader = torch.utils.data.DataLoader(IndexedExamples(dataset), batch_sampler=GlobalBatchSampler(len(dataset), [16], 0, 42),
                                         collate_fn=collator)
    started = time.perf_counter()
    for _, _ in zip(range(batches), loader):
        pass
    return (time.perf_counter() - started) / batches


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warm", type=int, default=10, help="steps left out of the timing")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--parts", default="bert,electra,scaling,resume", help="which measurements, comma-separated")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        corpus = aozora_corpus(work)
        tokenizer_dir = os.path.join(work, "tok")
        timed_command([sys.executable, os.path.join(ROOT, "train_tokenizer.py"), "--input_file", corpus,
                       "--model_dir", tokenizer_dir, "--vocab_size", "32768", "--num_files", "2", "--quiet"])
        params = os.path.join(work, "parameter.json")
        json.dump({"bert-bench": dict(PRESET, **{"train-steps": args.steps, "logging-steps": 10})}, open(params, "w"))
        examples = os.path.join(work, "examples")
        model_dir = os.path.join(work, "model")

        def command(model_type, model_dir, examples, run_name):
            return [sys.executable, os.path.join(ROOT, "run_pretraining.py"), "--input_file", corpus,
                    "--tokenizer_dir", tokenizer_dir, "--parameter_file", params, "--model_type", model_type,
                    "--model_dir", model_dir, "--dataset_dir", examples, "--logging_dir", os.path.join(work, "runs"),
                    "--run_name", run_name]

        common = command("bert-bench", model_dir, examples, "ours")
        timed_command(common + ["--prepare_only"])
        parts = args.parts.split(",")
        tokens = 16 * 128
        ours = None
        if "bert" in parts or "scaling" in parts or "resume" in parts:
            timed_command(common)
            times = event_times(os.path.join(work, "runs", "ours"))
            ours = (times[args.steps] - times[args.warm]) / (args.steps - args.warm)
        if "bert" in parts:
            result = subprocess.run([sys.executable, "-c", TRAINER_SCRIPT, examples, tokenizer_dir, str(args.steps),
                                     str(args.warm), str(args.threads)], capture_output=True, text=True, cwd=ROOT)
            if result.returncode:
                sys.exit(result.stderr[-3000:])
            stock = json.loads(result.stdout.strip().splitlines()[-1])["s_per_step"]
            print(f"BertForPreTraining 4x256x4, seq 128, batch 16, {args.threads} threads, "
                  f"steps {args.warm}-{args.steps}:")
            print(f"  run_pretraining.py : {ours:.3f} s/step, {tokens / ours:,.0f} tokens/s")
            print(f"  transformers Trainer: {stock:.3f} s/step, {tokens / stock:,.0f} tokens/s")
            loading = data_loading_seconds(examples, tokenizer_dir, 50)
            print(f"  our data loading + masking: {loading * 1000:.1f} ms/batch = {100 * loading / ours:.1f}% of a step")

        if "electra" in parts:  # ours against the plain loop, same sizes, batch and (packed) data
            json.dump({"electra-bench": dict(ELECTRA, **{"train-steps": args.steps, "logging-steps": 10})},
                      open(params, "w"))
            electra_examples = os.path.join(work, "electra-examples")
            electra = command("electra-bench", os.path.join(work, "electra-model"), electra_examples, "electra")
            timed_command(electra + ["--prepare_only"])
            timed_command(electra)
            times = event_times(os.path.join(work, "runs", "electra"))
            ours_electra = (times[args.steps] - times[args.warm]) / (args.steps - args.warm)
            result = subprocess.run([sys.executable, "-c", PLAIN_ELECTRA, electra_examples, tokenizer_dir,
                                     str(args.steps), str(args.warm), str(args.threads)], capture_output=True, text=True, cwd=ROOT)
            if result.returncode:
                sys.exit(result.stderr[-3000:])
            plain = json.loads(result.stdout.strip().splitlines()[-1])["s_per_step"]
            print("ELECTRA 4x256 (generator 1/4, embeddings 128), seq 128, batch 16:")
            print(f"  run_pretraining.py : {ours_electra:.3f} s/step, {tokens / ours_electra:,.0f} tokens/s")
            print(f"  plain loop over ElectraForMaskedLM + ElectraForPreTraining: {plain:.3f} s/step, "
                  f"{tokens / plain:,.0f} tokens/s")

        if "scaling" in parts:  # 1 process against 2 gloo processes of 1 thread each, same global batch
            json.dump({"bert-bench": dict(PRESET, **{"train-steps": args.steps, "logging-steps": 10})},
                      open(params, "w"))
            scaled = command("bert-bench", os.path.join(work, "two-model"), examples, "two")
            launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
            subprocess.run(launcher + scaled[1:], capture_output=True, text=True, check=True)
            times = event_times(os.path.join(work, "runs", "two"))
            two = (times[args.steps] - times[args.warm]) / (args.steps - args.warm)
            print(f"scaling, BERT above, global batch 16: 1 process {tokens / ours:,.0f} tokens/s, "
                  f"2 processes x 1 thread {tokens / two:,.0f} tokens/s ({ours / two:.2f}x)")

        if "resume" in parts:  # continue one more step from the last checkpoint
            json.dump({"bert-bench": dict(PRESET, **{"train-steps": args.steps + 1, "logging-steps": 10,
                                                     "save-steps": args.steps})}, open(params, "w"))
            seconds, _, result = timed_command(common + ["--do_continue", "--disable_overwrite_cache"])
            resumed = [line for line in result.stderr.splitlines() + result.stdout.splitlines() if "resumed from" in line]
            print(f"  --do_continue from step {args.steps}: {resumed[-1].split(', ')[-1] if resumed else '?'}; "
                  f"whole process with one more step and a checkpoint: {seconds:.1f} s")
