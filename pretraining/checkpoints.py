"""Checkpoints: model_dir/checkpoint-<step>/ with the model, the tokenizer and the accelerate state.

A checkpoint is written under a temporary name and renamed when complete, and an old one
is renamed away before it is deleted, so a kill at any moment leaves every
``checkpoint-<step>`` directory complete and the newest one usable by --do_continue.
"""

import json
import os
import re
import shutil

STATE_FILE = "trainer_state.json"
ACCELERATE_DIR = "accelerate_state"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(model_dir):
    """Complete checkpoints, oldest first: [(step, path)]."""
    if not os.path.isdir(model_dir):
        return []
    found = []
    for name in os.listdir(model_dir):
        match = _NAME.match(name)
        path = os.path.join(model_dir, name)
        if match and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def newest_checkpoint(model_dir):
    checkpoints = list_checkpoints(model_dir)
    return checkpoints[-1][1] if checkpoints else None


def read_state(checkpoint):
    with open(os.path.join(checkpoint, STATE_FILE), encoding="utf-8") as f:
        return json.load(f)


def remove_directory(path):
    """Rename first, then delete: a half-deleted directory never keeps a checkpoint's name."""
    doomed = os.path.join(os.path.dirname(path), f".deleting-{os.path.basename(path)}-{os.getpid()}")
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def save_checkpoint(accelerator, model_dir, step, write_files, state, keep):
    """Save on every rank (each writes its RNG state); the main process writes and renames the rest.

    ``write_files(directory)`` writes the model and tokenizer (main process only).
    """
    final = os.path.join(model_dir, f"checkpoint-{step}")
    temporary = os.path.join(model_dir, f".checkpoint-{step}.tmp")
    if accelerator.is_main_process:
        if os.path.exists(temporary):
            shutil.rmtree(temporary)
        os.makedirs(temporary)
    accelerator.wait_for_everyone()
    # The resume state beside the model. torch's format rather than safetensors: it keeps tied
    # weights (BERT's decoder and embeddings) as one tensor, where safetensors needs one copy
    # dropped and accelerate warns about it. Like the optimizer and RNG files next to it, only
    # load_state reads it; the model users load is the save_pretrained one (safetensors).
    accelerator.save_state(os.path.join(temporary, ACCELERATE_DIR), safe_serialization=False)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_files(temporary)
        with open(os.path.join(temporary, STATE_FILE), "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(final):  # a checkpoint of the same step from an abandoned run
            remove_directory(final)
        os.rename(temporary, final)
        if keep and keep > 0:
            for _, old in list_checkpoints(model_dir)[:-keep]:
                remove_directory(old)
    accelerator.wait_for_everyone()
    return final


def clean_debris(model_dir):
    """Remove temporary and half-deleted directories a killed run left behind."""
    if not os.path.isdir(model_dir):
        return
    for name in os.listdir(model_dir):
        if (name.startswith(".checkpoint-") and name.endswith(".tmp")) or name.startswith(".deleting-"):
            shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)
