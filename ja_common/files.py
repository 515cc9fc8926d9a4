"""Directories written safely: built under a temporary name beside the target, then renamed.

Every writer of the project (tokenizer, examples cache, ELECTRA extraction, and checkpoints,
whose staging name all ranks must know) builds in a staging directory next to its target and
renames it into place when complete, so a kill at any moment leaves the old directory or the
new one, never half of one; directories are removed the same way, renamed away first. Staging names carry
the host and the process id; the next run on that host removes those of dead processes.
"""

import contextlib
import os
import shutil
import socket
import tempfile

from .processes import process_alive


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _debris_base(target):
    """Every staging name of ``target`` starts so: ".<name>.<kind>-<host>-<pid>-..."."""
    return f".{os.path.basename(os.path.abspath(target))}."


def remove_dead_debris(target=None, folder=None):
    """Remove the staging directories that killed processes on this host left: those of ``target``,
    or of anything in ``folder``."""
    parent = folder or os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(parent):
        return
    host, base = socket.gethostname(), _debris_base(target) if target else "."
    for entry in os.listdir(parent):
        if not entry.startswith(base):
            continue
        name_end = len(base) if target else entry.find(".", 1) + 1  # "<kind>-<host>-<pid>-..." follows
        _, _, rest = entry[name_end:].partition("-")
        if not name_end or not rest.startswith(host + "-"):
            continue
        pid = rest[len(host) + 1:].split("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def make_staging_dir(target, kind="partial"):
    """A new empty directory beside ``target``, named for this host and process, with the user's umask
    (tempfile makes it 0700, which the renamed result would keep)."""
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    remove_dead_debris(target)
    path = tempfile.mkdtemp(prefix=f"{_debris_base(target)}{kind}-{socket.gethostname()}-{os.getpid()}-", dir=parent)
    os.chmod(path, 0o777 & ~current_umask())
    return path


@contextlib.contextmanager
def staging_directory(target, kind="partial"):
    """``with staging_directory(target) as staging:`` build there; whatever is left is removed at the end."""
    staging = make_staging_dir(target, kind)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _set_aside(path):
    """Rename ``path`` into a staging directory of its own (to be deleted); returns that directory."""
    aside = make_staging_dir(path, "old")
    os.rename(path, os.path.join(aside, "removed"))
    return aside


def remove_directory(path):
    """Rename first, then delete: a half-deleted directory never keeps its name."""
    shutil.rmtree(_set_aside(path), ignore_errors=True)


def replace_directory(built, target):
    """Rename ``built`` to ``target``; an older ``target`` is first renamed away, then deleted."""
    aside = _set_aside(target) if os.path.exists(target) else None
    os.rename(built, target)
    if aside:
        shutil.rmtree(aside, ignore_errors=True)


# what a model directory of transformers or of this project holds (a run's final model or checkpoints)
MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
               "pretraining_preset.json")


def holds_model(directory):
    """True when ``directory`` holds a model or a run's checkpoints: work that only its own flags replace."""
    if not os.path.isdir(directory):
        return False
    names = os.listdir(directory)
    return any(n in MODEL_FILES for n in names) or any(n.startswith("checkpoint-") for n in names)


def readable_like_umask(directory):
    """Give the files below ``directory`` the mode the umask gives new files: some writers (safetensors
    through a temporary file) leave 0600, which a group's shared directory cannot read."""
    mode = 0o666 & ~current_umask()
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            if os.stat(path).st_mode & 0o777 != mode:
                os.chmod(path, mode)
