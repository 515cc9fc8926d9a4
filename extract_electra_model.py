"""Split an ELECTRA checkpoint of run_pretraining.py into generator/ and discriminator/ models.

    python extract_electra_model.py --input_dir model/electra/checkpoint-1000000 \\
        --output_dir model/electra/extracted-1000000 --generator --discriminator
"""

import argparse

from ja_common.errors import ArgumentParser, exit_on_user_error


def parse_args(argv=None):
    parser = ArgumentParser(prog="extract_electra_model.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input_dir", required=True, help="a checkpoint-<step> directory or the final model directory")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--parameter_file", help="optional: checked against the configuration the checkpoint records")
    parser.add_argument("--model_type", help="optional, with --parameter_file")
    parser.add_argument("--generator", action="store_true", help="write output_dir/generator (ElectraForMaskedLM)")
    parser.add_argument("--discriminator", action="store_true",
                        help="write output_dir/discriminator (ElectraForPreTraining)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output_dir")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    from electra.extract import extract

    args = parse_args(argv)
    written = extract(args.input_dir, args.output_dir, args.generator, args.discriminator, args.parameter_file,
                      args.model_type, args.overwrite)
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
