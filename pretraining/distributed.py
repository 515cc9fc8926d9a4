"""Topology: node rank, local processes, per-rank batch sizes, CPU threads."""

import os

import torch

from ja_common.errors import UserError


def node_rank(override=None):
    """This node's rank: --node_rank, else what accelerate/torchrun put in the environment."""
    if override is not None:
        return override
    for name in ("GROUP_RANK", "NODE_RANK", "MACHINE_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def local_world_size():
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def is_multi_node(preset):
    return -1 not in preset.batch_size


def check_nodes(preset, num_processes):
    """A batch-size by node rank must name exactly the run's nodes: a missing node would silently
    shrink the global batch the preset gives."""
    if not is_multi_node(preset):
        return
    nodes = max(1, num_processes // local_world_size())
    if sorted(preset.batch_size) != list(range(nodes)):
        present = sum(preset.batch_size.get(rank, 0) for rank in range(nodes))
        raise UserError(f"parameter.json '{preset.model_type}': batch-size names node ranks "
                        f"{', '.join(map(str, sorted(preset.batch_size)))} but this run has {nodes} node(s): the "
                        f"global batch would be {present}, not {sum(preset.batch_size.values())}; give one entry per "
                        f"node (ranks 0 to {nodes - 1}), or {{\"-1\": N}} for one node")


def rank_batch_size(preset, override_node_rank=None):
    """This process's share of its node's batch."""
    rank = node_rank(override_node_rank)
    node_batch = preset.batch_size_for_node(rank if is_multi_node(preset) else -1)
    processes = local_world_size()
    if node_batch % processes:
        raise UserError(
            f"parameter.json '{preset.model_type}': node {rank}'s batch-size {node_batch} does not divide among its "
            f"{processes} processes; make it a multiple of {processes}"
        )
    return node_batch // processes


def cores_per_local_process():
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // local_world_size())


def set_cpu_threads():
    """On CPU, share the cores among the local processes (oversubscription is several times slower)."""
    if torch.cuda.is_available():
        return
    if os.environ.get("OMP_NUM_THREADS"):  # the user chose
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        return
    torch.set_num_threads(cores_per_local_process())


MAX_LOADER_WORKERS = 8


def default_loader_workers():
    """--dataloader_num_workers when not given: on a GPU, this process's cores less the one that
    drives the GPU (at most 8); on the CPU none, as the model's threads use every core."""
    if not torch.cuda.is_available():
        return 0
    return min(MAX_LOADER_WORKERS, cores_per_local_process() - 1)


def start_loader_worker(stop_signals, worker_id):
    """A loader worker: one thread (the workers share the cores), and deaf to the stop signals: the
    training process decides when the run stops, and ends its workers itself."""
    import signal

    torch.set_num_threads(1)
    for number in stop_signals:
        signal.signal(number, signal.SIG_IGN)


def gather_rank_batches(accelerator, my_batch):
    """The batch sizes of every rank, in rank order."""
    if accelerator.num_processes == 1:
        return [my_batch]
    from accelerate.utils import gather_object

    return gather_object([my_batch])


def set_deepspeed_micro_batch(accelerator, my_batch):
    """DeepSpeed wants the micro-batch size, which accelerate reads from prepared loaders; ours is
    not prepared (the sampler shards the data itself)."""
    if accelerator.state.deepspeed_plugin is not None:
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = my_batch
