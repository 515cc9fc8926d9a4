"""Train a Japanese tokenizer: MeCab word splitting, then WordPiece or BPE subwords.

    python train_tokenizer.py --input_file corpus.txt --model_dir tokenizer/ja-wordpiece
"""

import argparse

from ja_common.corpus import DEFAULT_TEXT_COLUMN, ENCODING_ERRORS
from ja_common.errors import ArgumentParser, exit_on_user_error
from tokenizer.mecab import DICTIONARIES
from tokenizer.train import TOKENIZER_TYPES, TokenizerSettings, train_tokenizer


_UNITS = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def byte_count(text):
    """A number of bytes with an optional K/M/G/T suffix (powers of 1000), or a share up to 1."""
    scale = _UNITS.get(text[-1:].upper(), 1)
    try:
        return float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte count (e.g. 5G, 500M) or a share (e.g. 0.05)") from None


def parse_args(argv=None):
    defaults = TokenizerSettings()
    parser = ArgumentParser(prog="train_tokenizer.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input_file", nargs="+", required=True,
                        help="corpus files, directories or glob patterns: text (.txt, or .gz/.bz2/.xz), .jsonl "
                             "(or compressed), .parquet, or a folder from datasets' save_to_disk")
    parser.add_argument("--text_column", default=DEFAULT_TEXT_COLUMN,
                        help="the documents' field in .jsonl, .parquet and datasets inputs (default: text)")
    parser.add_argument("--model_dir", required=True, help="where the tokenizer is saved")
    parser.add_argument("--intermediate_dir", help="keep the MeCab-split word files here (default: a temporary folder)")
    parser.add_argument("--num_files", type=int, default=1, help="parallel MeCab processes (shards of the corpus)")
    parser.add_argument("--mecab_dic_type", "--mecab_dic", choices=list(DICTIONARIES), default=defaults.mecab_dic_type)
    parser.add_argument("--mecab_option", default="", help="extra MeCab options, e.g. a user dictionary: '-u user.dic'")
    parser.add_argument("--tokenizer_type", choices=TOKENIZER_TYPES, default=defaults.tokenizer_type)
    parser.add_argument("--vocab_size", type=int, default=defaults.vocab_size)
    parser.add_argument("--min_frequency", type=int, default=defaults.min_frequency)
    parser.add_argument("--limit_alphabet", type=int, default=defaults.limit_alphabet)
    parser.add_argument("--num_unused_tokens", type=int, default=defaults.num_unused_tokens)
    parser.add_argument(
        "--encoding_errors",
        choices=ENCODING_ERRORS,
        default="strict",
        help="bytes that are not UTF-8: stop (strict), replace them with U+FFFD, or skip the line",
    )
    parser.add_argument("--sample_bytes", type=byte_count, metavar="N",
                        help="train on an evenly drawn sample of the documents: about N bytes of the inputs as "
                             "stored (e.g. 5G; compressed inputs give more text), or a share of them up to 1 "
                             "(e.g. 0.05). The draw depends only on --seed and each document's text")
    parser.add_argument("--seed", type=int, default=0, help="the seed of --sample_bytes' draw (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a tokenizer already in --model_dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    settings = TokenizerSettings(
        tokenizer_type=args.tokenizer_type,
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        limit_alphabet=args.limit_alphabet,
        num_unused_tokens=args.num_unused_tokens,
        mecab_dic_type=args.mecab_dic_type,
        mecab_option=args.mecab_option,
    )
    model_dir = train_tokenizer(
        args.input_file,
        args.model_dir,
        settings,
        intermediate_dir=args.intermediate_dir,
        num_files=args.num_files,
        overwrite=args.overwrite,
        encoding_errors=args.encoding_errors,
        show_progress=not args.quiet,
        text_column=args.text_column,
        sample_bytes=args.sample_bytes,
        seed=args.seed,
    )
    print(f"tokenizer saved to {model_dir}")


if __name__ == "__main__":
    main()
