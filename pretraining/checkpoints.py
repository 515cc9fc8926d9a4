"""Checkpoints: model_dir/checkpoint-<step>/ with the model, the tokenizer and the accelerate state;
and the model directories themselves (``ModelWriter``), final or inside a checkpoint.

A checkpoint is written under a temporary name and renamed when complete, and an old one
is renamed away before it is deleted, so a kill at any moment leaves every
``checkpoint-<step>`` directory complete and the newest one usable by --do_continue.
Its last file is a manifest of every file's size and SHA-256: a checkpoint damaged later
(a truncated copy, a full disk, a lost file) is found before it is trusted, and the run
continues from the newest intact one instead.
"""

import hashlib
import json
import os
import re
import shutil

from ja_common.errors import UserError, disk_full
from ja_common.files import (make_staging_dir, readable_like_umask, remove_dead_debris, remove_directory,
                             replace_directory)
from tokenizer.train import TOKENIZER_FILES

from .run_record import RunRecord

STATE_FILE = "trainer_state.json"  # the run's record (pretraining/run_record.py) at the checkpoint's step
PRESET_FILE = "pretraining_preset.json"  # in checkpoints and the final model: how it was trained
RESULTS_FILE = "eval_results.json"  # the last held-out figures, beside the model they score
MANIFEST_FILE = "checkpoint_manifest.json"
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


def read_record(checkpoint):
    return RunRecord.from_json(read_state(checkpoint))


def write_results(directory, results):
    with open(os.path.join(directory, RESULTS_FILE), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
        f.write("\n")


class TokenizerFiles:
    """The tokenizer beside every saved model, with the tokens the family adds (T5's sentinels)."""

    def __init__(self, tokenizer_dir, family, encoder):
        self.tokenizer_dir = tokenizer_dir
        self.hf_tokenizer = None
        if family.extra_tokens is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=True)
            extra = family.extra_tokens(encoder)
            tokenizer.add_special_tokens({"additional_special_tokens": list(extra)})
            tokenizer.eos_token = "[SEP]"
            assert tokenizer.convert_tokens_to_ids(list(extra)) == list(extra.values())
            self.hf_tokenizer = tokenizer

    def write(self, directory):
        if self.hf_tokenizer is not None:
            self.hf_tokenizer.save_pretrained(directory)
            return
        for name in TOKENIZER_FILES:
            source = os.path.join(self.tokenizer_dir, name)
            if os.path.isfile(source):
                shutil.copy2(source, os.path.join(directory, name))


class ModelWriter:
    """Writes a model directory: the weights, the tokenizer (in each part's folder too), how it was
    trained and its last held-out figures.

    ``write`` is called on every rank: under FSDP and DeepSpeed ZeRO-3 the full weights are
    gathered from all of them (accelerate's documented get_state_dict); the main process writes.
    """

    def __init__(self, accelerator, model, family, record, tokenizer_files):
        self.accelerator, self.model, self.family = accelerator, model, family
        self.record, self.tokenizer_files = record, tokenizer_files

    def write(self, directory, eval_results=None):
        state_dict = self.accelerator.get_state_dict(self.model)
        if not self.accelerator.is_main_process:
            return
        self.accelerator.unwrap_model(self.model).save_pretrained(directory, state_dict=state_dict)
        self.tokenizer_files.write(directory)
        for part in self.family.parts:  # ELECTRA: each part loads with its tokenizer
            self.tokenizer_files.write(os.path.join(directory, part))
        with open(os.path.join(directory, PRESET_FILE), "w", encoding="utf-8") as f:
            json.dump(self.record.preset_record(), f, indent=2)
        if eval_results is not None:
            write_results(directory, eval_results)
        readable_like_umask(directory)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory):
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, directory)] = {"bytes": os.path.getsize(path), "sha256": _sha256(path)}
    with open(os.path.join(directory, MANIFEST_FILE), "w", encoding="utf-8") as f:
        json.dump({"files": files}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def damage(checkpoint):
    """None when the checkpoint's files match its manifest, else what is wrong (one line)."""
    manifest_path = os.path.join(checkpoint, MANIFEST_FILE)
    if not os.path.isfile(manifest_path):
        try:
            state = read_state(checkpoint)
        except (OSError, ValueError):
            return f"{STATE_FILE} is unreadable"
        if "parameters" in state:  # written by this version, which always writes the manifest
            return f"{MANIFEST_FILE} is missing"
        # written before manifests existed: only the state file and the folder can be checked
        return None if os.path.isdir(os.path.join(checkpoint, ACCELERATE_DIR)) else f"{ACCELERATE_DIR}/ is missing"
    try:
        with open(manifest_path, encoding="utf-8") as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError):
        return f"{MANIFEST_FILE} is unreadable"
    for name, expected in sorted(files.items()):
        path = os.path.join(checkpoint, name)
        if not os.path.isfile(path):
            return f"{name} is missing"
        if os.path.getsize(path) != expected["bytes"]:
            return f"{name} has {os.path.getsize(path)} bytes, {expected['bytes']} were written"
        if _sha256(path) != expected["sha256"]:
            return f"{name} does not hold what was written (checksum)"
    return None


def newest_intact_checkpoint(model_dir, warn=print):
    """The newest checkpoint whose files are intact; each damaged newer one is named in a warning."""
    for _, path in reversed(list_checkpoints(model_dir)):
        problem = damage(path)
        if problem is None:
            return path
        warn(f"warning: {path} is damaged ({problem}); trying the checkpoint before it")
    return None


def write_final_model(writer, model_dir, eval_results=None):
    """The final model into model_dir itself, built in a staging folder there and moved into place:
    a failed write (a full disk) leaves model_dir as it was. Called on every rank, as writer.write."""
    main = writer.accelerator.is_main_process
    staging = make_staging_dir(os.path.join(model_dir, "final")) if main else None
    try:
        writer.write(staging, eval_results)
        if main:
            for name in sorted(os.listdir(staging)):
                built, target = os.path.join(staging, name), os.path.join(model_dir, name)
                (replace_directory if os.path.isdir(built) else os.replace)(built, target)
    except OSError as error:
        if not disk_full(error):
            raise
        raise UserError(f"writing the final model into {model_dir} failed (the disk is full); nothing of it was kept. "
                        f"The last complete checkpoint is {newest_checkpoint(model_dir) or 'none'}: free space, then "
                        "run again with --do_continue") from None
    finally:
        if main:
            shutil.rmtree(staging, ignore_errors=True)


def save_checkpoint(accelerator, model_dir, writer, record, keep, eval_results=None):
    """Save on every rank (each writes its RNG state); the main process writes and renames the rest.

    ``writer`` (a ModelWriter) writes the model and tokenizer; ``record`` (a RunRecord) is the
    run's at the step reached.
    """
    final = os.path.join(model_dir, f"checkpoint-{record.step}")
    # the main process makes the staging directory; every rank writes its RNG state into it
    temporary = [make_staging_dir(final) if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        temporary = broadcast_object_list(temporary)
    temporary = temporary[0]
    try:
        # The resume state beside the model. torch's format rather than safetensors: it keeps tied
        # weights (BERT's decoder and embeddings) as one tensor, where safetensors needs one copy
        # dropped and accelerate warns about it. Like the optimizer and RNG files next to it, only
        # load_state reads it; the model users load is the save_pretrained one (safetensors).
        accelerator.save_state(os.path.join(temporary, ACCELERATE_DIR), safe_serialization=False)
        accelerator.wait_for_everyone()
        writer.write(temporary, eval_results)
        if accelerator.is_main_process:
            with open(os.path.join(temporary, STATE_FILE), "w", encoding="utf-8") as f:
                json.dump(record.to_json(), f, indent=2)
            write_manifest(temporary)
    except (OSError, RuntimeError) as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(error, RuntimeError) and not any(m in str(error) for m in _TORCH_WRITE_FAILURES):
            raise  # not a failed write: a bug, keep its traceback
        raise _write_error(error, final, model_dir) from None
    if accelerator.is_main_process:
        if os.path.exists(final):  # a checkpoint of the same step from an abandoned run
            remove_directory(final)
        os.rename(temporary, final)
        if keep and keep > 0:
            for _, old in list_checkpoints(model_dir)[:-keep]:
                remove_directory(old)
    accelerator.wait_for_everyone()
    return final


# how torch.save's zip writer reports a write that failed (a full disk among others)
_TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed")


def _write_error(error, final, model_dir):
    """A failed checkpoint write as a UserError: a full disk is the user's to fix, not a bug."""
    last = newest_checkpoint(model_dir)
    full = disk_full(error) if isinstance(error, OSError) else shutil.disk_usage(model_dir).free < (64 << 20)
    what = "the disk is full" if full else f"{type(error).__name__}: {error}"
    return UserError(f"writing {final} failed ({what}); nothing of it was kept. The last complete checkpoint is "
                     f"{last or 'none'}: free space or fix the cause, then run again with --do_continue")


def clean_debris(model_dir):
    """Remove the temporary and half-deleted directories a killed run left behind."""
    if not os.path.isdir(model_dir):
        return
    remove_dead_debris(folder=model_dir)
    for name in os.listdir(model_dir):
        # .checkpoint-N.tmp and .deleting-*: what versions before ja_common's staging directories left
        if (name.startswith(".checkpoint-") and name.endswith(".tmp")) or name.startswith(".deleting-"):
            shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)
