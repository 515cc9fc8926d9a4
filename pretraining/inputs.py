"""The examples a run needs, from the command's data flags: built, reused or opened.

``args`` is run_pretraining.py's parsed command line (its data, evaluation and upstream flags).
"""

from tokenizer.encoder import SubwordEncoder
from tokenizer.errors import UserError

from .data import ExampleSpec, load_examples, prepare_examples


def check_tokenizer_flags(args, encoder):
    """--tokenizer_type / --mecab_dic_type are read from the tokenizer; as flags they must agree."""
    if args.tokenizer_type and args.tokenizer_type != encoder.tokenizer_type:
        raise UserError(f"--tokenizer_type {args.tokenizer_type} disagrees with {args.tokenizer_dir} "
                        f"({encoder.tokenizer_type}); drop the flag, it is read from the tokenizer")
    dic = encoder.mecab_kwargs.get("mecab_dic")
    if args.mecab_dic_type and args.mecab_dic_type != dic:
        raise UserError(f"--mecab_dic_type {args.mecab_dic_type} disagrees with {args.tokenizer_dir} ({dic}); "
                        "drop the flag, it is read from the tokenizer")


def check_evaluation_flags(args):
    percent = args.validation_split_percentage
    if percent is not None and not 0 < percent < 100:
        raise UserError(f"--validation_split_percentage must be between 0 and 100, not {percent:g}")
    if percent and args.validation_file:
        raise UserError("--validation_split_percentage and --validation_file: give one")
    if args.eval_steps is not None and args.eval_steps < 1:
        raise UserError("--eval_steps must be at least 1")


def prepare(args, preset, show_progress=True):
    """Build or reuse the examples; returns (the examples folder, the held-out folder or None)."""
    check_evaluation_flags(args)
    train_dir = prepare_split(args, preset, args.input_file, args.dataset_dir, args.validation_split_percentage,
                              show_progress)
    if args.validation_split_percentage:
        return train_dir, train_dir
    if args.validation_file:
        validation_dir = args.dataset_dir and args.dataset_dir.rstrip("/") + "-validation"
        return train_dir, prepare_split(args, preset, args.validation_file, validation_dir, None, show_progress)
    return train_dir, None


def prepare_split(args, preset, input_file, dataset_dir, validation_percent, show_progress):
    spec = ExampleSpec.from_preset(preset, args.seed, validation_percent)
    if not input_file:
        if not dataset_dir:
            raise UserError("give --input_file (a corpus) or --dataset_dir (prepared examples)")
        load_examples(dataset_dir, spec)
        return dataset_dir
    if not args.tokenizer_dir:
        raise UserError("--tokenizer_dir is needed to build examples from --input_file")
    encoder = SubwordEncoder(args.tokenizer_dir)
    check_tokenizer_flags(args, encoder)
    return prepare_examples(
        input_file, args.tokenizer_dir, spec, dataset_dir=dataset_dir, num_proc=args.num_proc,
        overwrite_cache=args.overwrite_cache, disable_overwrite_cache=args.disable_overwrite_cache,
        encoding_errors=args.encoding_errors, show_progress=show_progress, encoder=encoder,
    )
