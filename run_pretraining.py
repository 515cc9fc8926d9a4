"""Pretrain a Japanese language model with accelerate, or only prepare its examples.

    accelerate launch run_pretraining.py --input_file corpus.txt --tokenizer_dir tok/ \\
        --model_dir model/bert/ --parameter_file parameter.json --model_type bert-base \\
        [--do_whole_word_mask] [--do_continue] [--disable_overwrite_cache]

A stop signal (SIGTERM, SIGINT, SIGUSR1) or --max_minutes saves a checkpoint and exits with
code 75; run the same command with --do_continue to go on (scripts/slurm_pretrain.sbatch).
"""

import argparse
import time

PROCESS_START = time.time()  # for the resume time reported in the log

from ja_common.corpus import ENCODING_ERRORS
from ja_common.errors import ArgumentParser, exit_on_user_error
from pretraining.options import RunOptions
from pretraining.presets import ATTENTION_IMPLEMENTATIONS, MASKING_MODES


def parse_args(argv=None):
    parser = ArgumentParser(prog="run_pretraining.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--input_file", nargs="+",
                      help="corpus files, directories or glob patterns: text (.txt, or .gz/.bz2/.xz), .jsonl (or "
                           "compressed), .parquet, or a folder from datasets' save_to_disk; PATH:WEIGHT mixes corpora, "
                           "each taking WEIGHT/sum of the examples")
    data.add_argument("--text_column", default=RunOptions.text_column,
                      help="the documents' field in .jsonl, .parquet and datasets inputs (default: text)")
    data.add_argument("--dataset_dir", help="prepared examples (written by --prepare_only, or where to write them)")
    data.add_argument("--tokenizer_dir", help="a tokenizer from train_tokenizer.py")
    data.add_argument("--overwrite_cache", action="store_true", help="rebuild the examples even if a cache matches")
    data.add_argument("--disable_overwrite_cache", action="store_true",
                      help="never rebuild the examples: fail if the cache is missing or does not match")
    data.add_argument("--prepare_only", action="store_true", help="build the examples and exit")
    data.add_argument("--num_proc", type=int, help="processes that build examples (default: all cores)")
    data.add_argument("--encoding_errors", choices=ENCODING_ERRORS, default=RunOptions.encoding_errors)
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--validation_split_percentage", type=float,
                            help="hold out this percentage of the documents for evaluation (default: none)")
    evaluation.add_argument("--validation_file", nargs="+", help="held-out corpus files, directories or globs")
    evaluation.add_argument("--eval_steps", type=int,
                            help="evaluate every this many steps (default: the preset's eval-steps, else save-steps)")
    evaluation.add_argument("--do_eval", action="store_true",
                            help="no training: score the model in --model_dir (final or a checkpoint) on the held-out "
                                 "examples and write eval_results.json there")
    model = parser.add_argument_group("model")
    model.add_argument("--parameter_file", default=RunOptions.parameter_file)
    model.add_argument("--model_type", required=True, help="a preset in --parameter_file, e.g. bert-base")
    model.add_argument("--model_dir", help="checkpoints and the final model go here")
    train = parser.add_argument_group("training")
    train.add_argument("--masking", choices=MASKING_MODES,
                       help="which units masked-LM families predict: token, whole-word (every subword of a MeCab "
                            "word), ngram (whole-word n-grams), span (SpanBERT's spans of whole words); default: the "
                            "preset's \"masking\", else token")
    train.add_argument("--do_whole_word_mask", action="store_true", help="upstream's name for --masking whole-word")
    train.add_argument("--do_continue", action="store_true", help="resume from the newest complete checkpoint")
    train.add_argument("--overwrite_output_dir", action="store_true", help="start afresh in a model_dir with checkpoints")
    train.add_argument("--allow_data_change", action="store_true",
                       help="--do_continue on examples other than the checkpoint's (a changed corpus or mix); "
                            "refused without it")
    train.add_argument("--run_name", help="TensorBoard run name under --logging_dir (default: model_type and time)")
    train.add_argument("--logging_dir", default=RunOptions.logging_dir, help="TensorBoard folder (default: runs/)")
    train.add_argument("--report_to", nargs="+", default=list(RunOptions.report_to),
                       choices=["tensorboard", "wandb", "mlflow", "trackio", "all", "none"],
                       help="where the figures go, several at once (default: tensorboard); wandb, mlflow and "
                            "trackio are extras: pip install \"ja-pretraining[wandb]\" ...")
    train.add_argument("--seed", type=int, default=RunOptions.seed)
    train.add_argument("--node_rank", type=int, help="this node's rank (default: from the launcher)")
    train.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # torch.distributed.launch passes it
    stopping = parser.add_argument_group(
        "stopping and checkpoints by the clock (a stopped run exits with code 75 and writes run_status.json)")
    stopping.add_argument("--save_minutes", type=float,
                          help="also write a checkpoint every this many minutes (overrides the preset's save-minutes)")
    stopping.add_argument("--max_minutes", type=float,
                          help="stop with a checkpoint before this many minutes since the start (e.g. the job's "
                               "time limit), leaving time for the save")
    stopping.add_argument("--stop_signals", nargs="+", default=list(RunOptions.stop_signals), metavar="SIGNAL",
                          help="signals that save a checkpoint and stop (default: SIGTERM SIGINT SIGUSR1); a second "
                               "one exits at once")
    speed = parser.add_argument_group("speed (override the preset's keys of the same names)")
    speed.add_argument("--torch_compile", action=argparse.BooleanOptionalAction, default=None,
                       help="compile the model with torch.compile (inductor)")
    speed.add_argument("--gradient_checkpointing", action=argparse.BooleanOptionalAction, default=None,
                       help="recompute activations in the backward pass: less memory, about 30%% more compute")
    speed.add_argument("--attention_implementation", choices=ATTENTION_IMPLEMENTATIONS,
                       help="transformers' attention kernel (default: sdpa where the family has it)")
    speed.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                       help="bfloat16 mixed precision (GPUs since Ampere, and CPUs)")
    data.add_argument("--dataloader_num_workers", type=int,
                       help="processes that read and mask batches ahead of the training step (default: on a GPU, "
                            "the process's cores less one, at most 8; on the CPU 0, batches made in the training "
                            "process); the batches are the same with any number")
    speed.add_argument("--peak_tflops", type=float,
                       help="the device's peak TFLOP/s for MFU (known GPUs are looked up)")
    compat = parser.add_argument_group("accepted for upstream compatibility")
    compat.add_argument("--fp16_type", type=int, help="overrides the preset's fp16-type (0 off, 1-3 mixed fp16)")
    compat.add_argument("--tokenizer_type", help="checked against the tokenizer directory")
    compat.add_argument("--mecab_dic_type", help="checked against the tokenizer directory")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    from pretraining.data.prepare import prepare
    from pretraining.presets import load_preset

    options = RunOptions(**vars(parse_args(argv)), process_start=PROCESS_START)
    preset = load_preset(options.parameter_file, options.model_type)
    if options.prepare_only:
        dataset_dir, validation_dir = prepare(options, preset)
        print(f"examples ready in {dataset_dir}" + (f", held-out examples in {validation_dir}"
                                                     if validation_dir not in (None, dataset_dir) else ""))
        return
    if options.do_eval:
        from pretraining.train import run_evaluation

        run_evaluation(options, preset)
        return
    from pretraining.train import run_training

    run_training(options, preset)


if __name__ == "__main__":
    main()
