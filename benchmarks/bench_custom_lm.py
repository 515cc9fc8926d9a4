"""Quality of the non-transformer families: GatedCNN, LSTM and ELMo at about 3M parameters.

    python benchmarks/bench_custom_lm.py [--steps 300] [--learning_rate 2e-3] [--families gatedcnn,lstm,elmo]
        [--set KEY=JSON ...] [--tag NAME] [--seed N] [--work DIR] [--uer]

The same tokenizer (WordPiece, 8000 entries) and packed blocks of the Aozora corpus with 5% of
its documents held out; the same steps, batch and learning rate for every family. Prints the
parameter count, the held-out loss per token and per character (the held-out tokens' nats over
their characters: comparable across tokenizers), and training tokens/s. For ELMo the forward
direction is the language model compared.

``--uer`` is the side-by-side protocol with UER-py: the Aozora files in name order, documents
split at blank lines, the last 5% of the documents held out; WordPiece at 3000 entries
(``--limit_alphabet 1450``); UER-py's GatedCNN (5 layers, block 2, kernel 4, embedding 128,
hidden 256; LSTM 2 x 256, ELMo 2 x 256), learning rate 1e-4 with 10% warmup, batch 16,
sequence 128, 1,500 steps. Besides the packed held-out blocks it scores each held-out line
alone, as UER-py's LM rows are ([CLS] line [SEP], the end of line charged), in nats per
character, over all lines and over the lines without [UNK].
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
# UER-py's other recurrent encoders: the LSTM family's gru and rnn cells, ELMo's with gru cells
PRESETS.update(gru=dict(PRESETS["lstm"], family="lstm", cell="gru"), rnn=dict(PRESETS["lstm"], family="lstm", cell="rnn"),
               bigru=dict(PRESETS["elmo"], family="elmo", cell="gru"))
UER_PRESETS = dict(PRESETS, gatedcnn={"number-of-layers": 5, "hidden-size": 256, "embedding-size": 128,
                                      "kernel-size": 4, "block-size": 2})


def uer_split(work):
    """(training file, held-out file): the Aozora files in name order, documents at blank lines,
    the last 5% of the documents held out."""
    from benchmarks.common import AOZORA

    train, held_out = os.path.join(work, "uer-train.txt"), os.path.join(work, "uer-heldout.txt")
    if not os.path.exists(held_out):
        text = "\n".join(open(os.path.join(AOZORA, n), encoding="utf-8").read().strip("\n") + "\n"
                         for n in sorted(os.listdir(AOZORA)) if n.endswith(".txt"))
        documents = [d.strip("\n") for d in text.split("\n\n") if d.strip()]
        cut = len(documents) - len(documents) // 20
        for path, part in ((train, documents[:cut]), (held_out, documents[cut:])):
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n\n".join(part) + "\n")
    return train, held_out


def score_lines_alone(model_dir, tokenizer_dir, held_out, bidirectional):
    """Nats per character of each held-out line scored alone ([CLS] line [SEP], the [SEP] charged as the
    line's end): (all lines, lines without [UNK])."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForPreTraining

    from tokenizer.encoder import SubwordEncoder

    encoder = SubwordEncoder(tokenizer_dir)
    cls, sep, unk, pad = (encoder.token_id(t) for t in ("[CLS]", "[SEP]", "[UNK]", "[PAD]"))
    lines = [line for line in open(held_out, encoding="utf-8").read().split("\n") if line.strip()]
    rows = [[cls, *ids, sep] for ids, _ in encoder.encode(lines)]
    auto = AutoModelForPreTraining if bidirectional else AutoModelForCausalLM  # ELMo: its forward direction
    model = auto.from_pretrained(model_dir, trust_remote_code=True).eval()
    totals = {"all": [0.0, 0], "no [UNK]": [0.0, 0]}
    order = sorted(range(len(rows)), key=lambda k: len(rows[k]))
    with torch.no_grad():
        for start in range(0, len(order), 64):  # rows of similar length, padded on the right (causal models)
            batch = [rows[k] for k in order[start:start + 64]]
            width = max(map(len, batch))
            ids = torch.tensor([row + [pad] * (width - len(row)) for row in batch])
            out = model(ids)
            logits = out.forward_logits if bidirectional else out.logits
            nats = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).float(), ids[:, 1:],
                                                     reduction="none")
            for row, k, loss in zip(batch, order[start:start + 64], nats):
                value, characters = float(loss[:len(row) - 1].sum()), len(lines[k]) + 1  # + the end of line
                totals["all"][0] += value
                totals["all"][1] += characters
                if unk not in row:
                    totals["no [UNK]"][0] += value
                    totals["no [UNK]"][1] += characters
    return {name: nats / characters for name, (nats, characters) in totals.items()}


def held_out_characters(examples_dir, tokenizer_dir, split="validation"):
    """Characters of the held-out tokens that are predicted (all but the first of each block)."""
    from pretraining.data.cache import load_examples

    vocab = open(os.path.join(tokenizer_dir, "vocab.txt"), encoding="utf-8").read().split("\n")[:-1]
    length = [0 if t.startswith("[") and t.endswith("]") else len(t[2:] if t.startswith("##") else t)
              for t in vocab]
    dataset, _ = load_examples(examples_dir, split=split)
    characters = predicted = 0
    for row in dataset["input_ids"]:
        characters += sum(length[i] for i in row[1:])
        predicted += len(row) - 1
    return characters, predicted


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--families", default="gatedcnn,lstm,elmo", help=f"of {', '.join(PRESETS)}")
    parser.add_argument("--work", help="keep the tokenizer, examples and runs here (default: a temporary folder)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                        help="preset keys changed for every family run, e.g. weight-norm=true initialization='\"kaiming\"'")
    parser.add_argument("--tag", default="", help="appended to each run's name (to keep variants apart)")
    parser.add_argument("--seed", type=int, default=42, help="the runs' seed (initialisation, data order, held-out "
                        "documents): repeat a comparison with another to see the noise")
    parser.add_argument("--learning_rate", type=float, help="default: 2e-3, or 1e-4 with --uer")
    parser.add_argument("--uer", action="store_true", help="UER-py's protocol and configuration (above)")
    args = parser.parse_args()
    if args.uer and args.steps == 300:
        args.steps = 1500
    changes = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or temporary
        os.makedirs(work, exist_ok=True)
        if args.uer:
            corpus, held_out = uer_split(work)
            vocab, alphabet, presets, data = "3000", "1450", UER_PRESETS, ["--validation_file", None]
        else:
            corpus, held_out = aozora_corpus(work), None
            vocab, alphabet, presets, data = "8000", "3000", PRESETS, ["--validation_split_percentage", "5"]
        data[-1] = data[-1] or held_out
        tokenizer_dir = os.path.join(work, f"tok-{vocab}")
        if not os.path.isdir(tokenizer_dir):
            timed_command([sys.executable, os.path.join(ROOT, "train_tokenizer.py"), "--input_file", corpus,
                           "--model_dir", tokenizer_dir, "--vocab_size", vocab, "--num_files", "2", "--quiet",
                           "--limit_alphabet", alphabet])
        params = os.path.join(work, "parameter.json")
        learning_rate = args.learning_rate or (1e-4 if args.uer else COMMON["learning-rate"])
        common = dict(COMMON, **{"learning-rate": learning_rate,
                                 "warmup-steps": args.steps // 10 if args.uer else COMMON["warmup-steps"]})
        presets = {f"{family}-bench": {**common, **presets[family], "train-steps": args.steps,
                                       "save-steps": args.steps, **changes}
                   for family in presets}
        json.dump(presets, open(params, "w"))
        examples = os.path.join(work, f"examples-{vocab}")
        characters = None
        print(f"Aozora{' (UER-py protocol: the last 5% of documents held out)' if args.uer else ''}, WordPiece "
              f"{vocab}, packed blocks of 128, {args.steps} steps of 16 blocks, learning rate {learning_rate:g}"
              f"{', ' if changes else ''}{', '.join(f'{k} {v}' for k, v in changes.items())}")
        for family in args.families.split(","):
            run = family + args.tag
            model_dir = os.path.join(work, run)
            seconds, _, result = timed_command([
                sys.executable, os.path.join(ROOT, "run_pretraining.py"), "--input_file", corpus, "--tokenizer_dir",
                tokenizer_dir, "--parameter_file", params, "--model_type", f"{family}-bench", "--model_dir",
                model_dir, "--dataset_dir", examples, "--logging_dir", os.path.join(work, "runs"), "--run_name",
                run, *data, "--overwrite_output_dir", "--seed", str(args.seed)])
            if result.returncode:
                sys.exit(result.stderr[-3000:])
            if characters is None:
                if args.uer:  # a --validation_file's examples: a folder of their own
                    characters, predicted = held_out_characters(examples + "-validation", tokenizer_dir, "train")
                else:
                    characters, predicted = held_out_characters(examples, tokenizer_dir)
            results = json.load(open(os.path.join(model_dir, "eval_results.json")))
            bidirectional = presets[f"{family}-bench"].get("family", family) == "elmo"
            loss = results["loss/forward"] if bidirectional else results["loss/lm"]
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
            if held_out:
                alone = score_lines_alone(model_dir, tokenizer_dir, held_out, bidirectional)
                print(f"{'':9s} held-out lines scored alone: {alone['all']:.4f}/character, "
                      f"{alone['no [UNK]']:.4f} on the lines without [UNK]", flush=True)


if __name__ == "__main__":
    main()
