"""The examples a run needs, from its data options (pretraining/options.py): built, reused or opened."""

import hashlib
import json
import os

from tokenizer.encoder import SubwordEncoder
from ja_common.errors import UserError

from .build import ExampleSpec
from .cache import INFO_FILE, check_examples_tokenizer, default_cache_root, load_examples, prepare_examples
from .mixing import sources, write_mixture


def check_tokenizer_flags(options, encoder):
    """--tokenizer_type / --mecab_dic_type are read from the tokenizer; as flags they must agree."""
    if options.tokenizer_type and options.tokenizer_type != encoder.tokenizer_type:
        raise UserError(f"--tokenizer_type {options.tokenizer_type} disagrees with {options.tokenizer_dir} "
                        f"({encoder.tokenizer_type}); drop the flag, it is read from the tokenizer")
    dic = encoder.mecab_kwargs.get("mecab_dic")
    if options.mecab_dic_type and options.mecab_dic_type != dic:
        raise UserError(f"--mecab_dic_type {options.mecab_dic_type} disagrees with {options.tokenizer_dir} ({dic}); "
                        "drop the flag, it is read from the tokenizer")


def check_evaluation_flags(options):
    percent = options.validation_split_percentage
    if percent is not None and not 0 < percent < 100:
        raise UserError(f"--validation_split_percentage must be between 0 and 100, not {percent:g}")
    if percent and options.validation_file:
        raise UserError("--validation_split_percentage and --validation_file: give one")


def held_out_inputs(options):
    """--validation_file's files, expanded once (errors and warnings name that flag), or None.

    A held-out file that is also trained on would score the model on its training data: refused.
    """
    if not options.validation_file:
        return None
    from ja_common.corpus import expand_inputs

    held_out = expand_inputs(options.validation_file, "--validation_file")
    if not options.input_file:
        return held_out
    training = {os.path.realpath(p) for inputs, _ in sources(options.input_file) for p in expand_inputs(inputs)}
    both = [p for p in held_out if os.path.realpath(p) in training]
    if both:
        raise UserError(f"--validation_file {both[0]} is also a training input (--input_file): hold out other "
                        "documents, or use --validation_split_percentage")
    return held_out


def prepare(options, preset, show_progress=True, encoder=None):
    """Build or reuse the examples; returns (the examples folder, the held-out folder or None).

    ``encoder``: the run's tokenizer (of --tokenizer_dir) where the caller has opened it already.
    """
    check_evaluation_flags(options)
    if (options.input_file or options.validation_file) and not options.tokenizer_dir:
        raise UserError("--tokenizer_dir is needed to build examples from --input_file")
    if options.tokenizer_dir:
        encoder = encoder or SubwordEncoder(options.tokenizer_dir)
        check_tokenizer_flags(options, encoder)
    validation_files = held_out_inputs(options)
    train_dir = prepare_split(options, preset, options.input_file, options.dataset_dir,
                              options.validation_split_percentage, show_progress, encoder)
    if options.validation_split_percentage:
        return train_dir, train_dir
    if options.validation_file:
        validation_dir = options.dataset_dir and options.dataset_dir.rstrip("/") + "-validation"
        return train_dir, prepare_split(options, preset, validation_files, validation_dir, None, show_progress,
                                        encoder)
    return train_dir, None


def prepare_split(options, preset, input_file, dataset_dir, validation_percent, show_progress, encoder):
    spec = ExampleSpec.from_preset(preset, options.seed, validation_percent)
    if not input_file:
        if not dataset_dir:
            raise UserError("give --input_file (a corpus) or --dataset_dir (prepared examples)")
        load_examples(dataset_dir, spec)
        if encoder is not None:
            check_examples_tokenizer(dataset_dir, options.tokenizer_dir, encoder)
        return dataset_dir

    def build(inputs, folder):
        return prepare_examples(
            inputs, options.tokenizer_dir, spec, dataset_dir=folder, num_proc=options.num_proc,
            overwrite_cache=options.overwrite_cache, disable_overwrite_cache=options.disable_overwrite_cache,
            encoding_errors=options.encoding_errors, show_progress=show_progress, encoder=encoder,
            text_column=options.text_column,
        )

    mix = sources(input_file)
    if len(mix) == 1 and mix[0][1] is None:
        return build(mix[0][0], dataset_dir)
    if dataset_dir and os.path.isfile(os.path.join(dataset_dir, INFO_FILE)):
        raise UserError(f"--dataset_dir {dataset_dir} holds the examples of a single corpus: give a mix of weighted "
                        "inputs another folder")
    parts = [(build(inputs, dataset_dir and os.path.join(dataset_dir, f"source-{k}")), weight, inputs)
             for k, (inputs, weight) in enumerate(mix)]
    if not dataset_dir:
        key = hashlib.sha256(json.dumps([[folder, weight] for folder, weight, _ in parts]).encode()).hexdigest()
        dataset_dir = os.path.join(default_cache_root(), f"mix-{key[:24]}")
    write_mixture(dataset_dir, parts)
    return dataset_dir
