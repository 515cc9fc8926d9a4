"""Split an ELECTRA pretraining checkpoint into a generator and a discriminator directory.

Each output is a plain Hugging Face directory with the tokenizer: generator/ loads with
AutoModelForMaskedLM (ElectraForMaskedLM), discriminator/ with AutoModelForPreTraining
(ElectraForPreTraining), both with the shared embeddings included.
"""

import json
import os
import re
import shutil

from ja_common.files import readable_like_umask, replace_directory, staging_directory
from pretraining.checkpoints import ACCELERATE_DIR, PRESET_FILE, STATE_FILE
from pretraining.presets import load_preset
from ja_common.errors import UserError

from pretraining.models.electra import DISCRIMINATOR_DIR, GENERATOR_DIR

MODEL_FILES = ("config.json", "model.safetensors")


def check_checkpoint(input_dir):
    """The recorded preset of a complete ELECTRA checkpoint or final model directory."""
    name = os.path.basename(os.path.normpath(input_dir))
    if not os.path.isdir(input_dir):
        state = "is a file, not a folder" if os.path.exists(input_dir) else "does not exist"
        raise UserError(f"--input_dir {input_dir} {state}: give the run's folder or a checkpoint-<step> in it")
    if name.startswith(".checkpoint-") or (name.startswith("checkpoint-")
                                           and not os.path.isfile(os.path.join(input_dir, STATE_FILE))):
        raise UserError(f"--input_dir {input_dir} is a half-written checkpoint: use a complete checkpoint-<step> "
                        "or the final model directory")
    record_path = os.path.join(input_dir, PRESET_FILE)
    if not os.path.isfile(record_path):
        raise UserError(f"--input_dir {input_dir} is not a checkpoint of run_pretraining.py (no {PRESET_FILE})")
    with open(record_path, encoding="utf-8") as f:
        record = json.load(f)
    if record.get("family") != "electra":
        raise UserError(f"--input_dir {input_dir} holds a {record.get('family')} model, not ELECTRA")
    for part in (GENERATOR_DIR, DISCRIMINATOR_DIR):
        missing = [n for n in MODEL_FILES if not os.path.isfile(os.path.join(input_dir, part, n))]
        if missing:
            raise UserError(f"--input_dir {input_dir} is incomplete: {part}/ lacks {', '.join(missing)}")
    return record


def check_agreement(record, parameter_file, model_type):
    """--parameter_file/--model_type, when given, must describe the checkpoint's model."""
    if model_type is None:
        return
    if model_type != record["model_type"]:
        raise UserError(f"--model_type {model_type} disagrees with the checkpoint, trained as {record['model_type']}: "
                        "drop --parameter_file/--model_type (the checkpoint records its own) or name the right one")
    preset = load_preset(parameter_file, model_type)
    keys = ("number-of-layers", "hidden-size", "embedding-size", "ffn-inner-hidden-size", "attention-heads",
            "generator-size")
    differing = [k for k in keys if preset.raw.get(k) != record["parameters"].get(k)]
    if differing:
        raise UserError(f"{parameter_file} '{model_type}' differs from the checkpoint in {', '.join(differing)}: "
                        "drop --parameter_file/--model_type, or restore the preset the model was trained with")


def _inside(path, folder):
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_output_dir(input_dir, output_dir, overwrite):
    """Refuse an output that would replace or remove the run's own files (the input, a folder above it,
    a checkpoint, generator/, discriminator/, accelerate's state); a new folder inside the run is
    fine. --overwrite replaces only an earlier extraction."""
    source, out = os.path.realpath(input_dir), os.path.realpath(output_dir)
    if _inside(source, out):
        raise UserError(f"--output_dir {output_dir} is or holds --input_dir {input_dir}: extract into a new folder, "
                        "e.g. <model_dir>/extracted-<step>")
    is_checkpoint = re.fullmatch(r"checkpoint-\d+", os.path.basename(source))
    run = os.path.dirname(source) if is_checkpoint else source
    if _inside(out, run):
        first = os.path.relpath(out, run).split(os.sep)[0]
        if re.fullmatch(r"\.?checkpoint-\d+(\..+)?", first) or first in (GENERATOR_DIR, DISCRIMINATOR_DIR,
                                                                          ACCELERATE_DIR):
            raise UserError(f"--output_dir {output_dir} lies inside the run's own {first}: extract into a new folder, "
                            "e.g. <model_dir>/extracted-<step>")
    if not os.path.exists(out):
        return
    if not os.path.isdir(out):
        raise UserError(f"--output_dir {output_dir} exists and is not a directory")
    entries = set(os.listdir(out))
    if not entries:
        return
    if not overwrite:
        raise UserError(f"--output_dir {output_dir} exists and is not empty: pass --overwrite to replace it")
    if not entries <= {GENERATOR_DIR, DISCRIMINATOR_DIR}:
        raise UserError(f"--output_dir {output_dir} holds more than an earlier extraction (generator/, "
                        "discriminator/): --overwrite replaces only an extraction; choose another folder")


def extract(input_dir, output_dir, generator=True, discriminator=True, parameter_file=None, model_type=None,
            overwrite=False):
    if not (generator or discriminator):
        raise UserError("nothing to extract: pass --generator, --discriminator or both")
    if (parameter_file is None) != (model_type is None) and model_type is None:
        raise UserError("--parameter_file needs --model_type")
    record = check_checkpoint(input_dir)
    check_agreement(record, parameter_file or "parameter.json", model_type)
    check_output_dir(input_dir, output_dir, overwrite)
    parts = [p for p, wanted in ((GENERATOR_DIR, generator), (DISCRIMINATOR_DIR, discriminator)) if wanted]
    with staging_directory(output_dir) as staging:
        built = os.path.join(staging, "extracted")
        os.mkdir(built)
        for part in parts:
            shutil.copytree(os.path.join(input_dir, part), os.path.join(built, part))
        readable_like_umask(built)  # runs written before 2026-12 kept their weights at 0600
        replace_directory(built, output_dir)
    return [os.path.join(output_dir, p) for p in parts]
