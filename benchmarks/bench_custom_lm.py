"""Quality of the non-transformer families: GatedCNN, LSTM and ELMo at about 3M parameters.

    python benchmarks/bench_custom_lm.py [--steps 300] [--families gatedcnn,lstm,elmo]
        [--set KEY=JSON ...] [--tag NAME] [--seed N] [--work DIR]

The same tokenizer (WordPiece, 8000 entries) and packed blocks of the Aozora corpus with 5% of
its documents held out; the same steps, batch and learning rate for every family. Prints the
parameter count, the held-out loss per token and per character (the held-out tokens' nats over
their characters: comparable across tokenizers), and training tokens/s. For ELMo the forward
direction is the language model compared.
"""

import argparse
import json
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import ROOT, aozora_corpus, timed_command  # noqa: E402

COMMON = {"sequence-length": 128, "learning-rate": 2e-3, "warmup-steps": 50, "batch-size": {"-1": 16},
          "logging-steps": 50, "dropout": 0.1}
# about 3M parameters each with an 8000-entry vocabulary (counted and printed by the run)
PRESETS = {
    "gatedcnn": {"number-of-layers": 5, "hidden-size": 192, "embedding-size": 128, "kernel-size": 4,
                 "block-size": 2},
    "lstm": {"number-of-layers": 2, "hidden-size": 256, "embedding-size": 128},
    "elmo": {"number-of-layers": 2, "hidden-size": 256, "embedding-size": 128, "projection-size": 128},
}


def held_out_characters(examples_dir, tokenizer_dir):
    """Characters of the held-out tokens that are predicted (all but the first of each block)."""
    from pretraining.data.cache import load_examples

    vocab = open(os.path.join(tokenizer_dir, "vocab.txt"), encoding="utf-8").read().split("\n")[:-1]
    length = [0 if t.startswith("[") and t.endswith("]") else len(t[2:] if t.startswith("##") else t)
              for t in vocab]
    dataset, _ = load_examples(examples_dir, split="validation")
    characters = predicted = 0
    for row in dataset["input_ids"]:
        characters += sum(length[i] for i in row[1:])
        predicted += len(row) - 1
    return characters, predicted


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--families", default="gatedcnn,lstm,elmo")
    parser.add_argument("--work", help="keep the tokenizer, examples and runs here (default: a temporary folder)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                        help="preset keys changed for every family run, e.g. weight-norm=true initialization='\"kaiming\"'")
    parser.add_argument("--tag", default="", help="appended to each run's name (to keep variants apart)")
    parser.add_argument("--seed", type=int, default=42, help="the runs' seed (initialisation, data order, held-out "
                        "documents): repeat a comparison with another to see the noise")
    args = parser.parse_args()
    changes = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or temporary
        os.makedirs(work, exist_ok=True)
        corpus = aozora_corpus(work)
        tokenizer_dir = os.path.join(work, "tok")
        if not os.path.isdir(tokenizer_dir):
            timed_command([sys.executable, os.path.join(ROOT, "train_tokenizer.py"), "--input_file", corpus,
                           "--model_dir", tokenizer_dir, "--vocab_size", "8000", "--num_files", "2", "--quiet",
                           "--limit_alphabet", "3000"])
        params = os.path.join(work, "parameter.json")
        presets = {f"{family}-bench": {**COMMON, **PRESETS[family], "train-steps": args.steps,
                                       "save-steps": args.steps, **changes}
                   for family in PRESETS}
        json.dump(presets, open(params, "w"))
        examples = os.path.join(work, "examples")
        characters = None
        print(f"Aozora, WordPiece 8000, packed blocks of 128, 5% of the documents held out, {args.steps} steps of "
              f"16 blocks, learning rate {COMMON['learning-rate']}{', ' if changes else ''}"
              f"{', '.join(f'{k} {v}' for k, v in changes.items())}")
        for family in args.families.split(","):
            run = family + args.tag
            model_dir = os.path.join(work, run)
            seconds, _, result = timed_command([
                sys.executable, os.path.join(ROOT, "run_pretraining.py"), "--input_file", corpus, "--tokenizer_dir",
                tokenizer_dir, "--parameter_file", params, "--model_type", f"{family}-bench", "--model_dir",
                model_dir, "--dataset_dir", examples, "--logging_dir", os.path.join(work, "runs"), "--run_name",
                run, "--validation_split_percentage", "5", "--overwrite_output_dir", "--seed", str(args.seed)])
            if result.returncode:
                sys.exit(result.stderr[-3000:])
            if characters is None:
                characters, predicted = held_out_characters(examples, tokenizer_dir)
            results = json.load(open(os.path.join(model_dir, "eval_results.json")))
            loss = results["loss/forward"] if family == "elmo" else results["loss/lm"]
            from safetensors import safe_open

            with safe_open(os.path.join(model_dir, "model.safetensors"), "pt") as f:
                parameters = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

            events = EventAccumulator(os.path.join(work, "runs", run))
            events.Reload()
            speeds = [e.value for e in events.Scalars("tokens_per_second")][1:]
            print(f"{run:9s} {parameters / 1e6:.2f}M parameters: held-out loss {loss:.4f}/token, "
                  f"{loss * predicted / characters:.4f}/character (perplexity {math.exp(loss):.1f}); "
                  f"{sum(speeds) / len(speeds):,.0f} tokens/s; {seconds:.0f} s in all", flush=True)


if __name__ == "__main__":
    main()
