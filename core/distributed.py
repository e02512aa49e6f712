"""torch.distributed glue: process-group setup from torchrun's environment, rank-aware helpers,
and the batch-sharded random source that makes an N-process run reproduce a 1-process run.

Launch with ``torchrun --nproc_per_node=N run.py ...``; torchrun sets RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_ADDR / MASTER_PORT. Backend: NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False  # a process group exists (torchrun, even with one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.initialized


def init_distributed(backend: str = "auto") -> DistInfo:
    """Join the process group that torchrun (or a Slurm launcher) describes.

    A plain ``python`` run has no group. Under torchrun a group is created even for one process,
    so that ``torchrun --nproc_per_node=1`` exercises the same NCCL/DDP path as a multi-GPU run.
    """
    if "SLURM_PROCID" in os.environ and "RANK" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        _export_slurm_env()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    world = int(os.environ["WORLD_SIZE"])
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        # Leave the group while the interpreter is still whole: a gloo worker thread still alive at
        # interpreter teardown can abort the process ("terminate called without an active
        # exception", exit -6) after a run that finished correctly.
        atexit.register(destroy_process_group)
    log.info("joined process group: rank %d of %d (%s)", rank, world, backend)
    return DistInfo(rank, world, local_rank, True)


def _export_slurm_env() -> None:
    """Slurm (e.g. through hydra-submitit-launcher) starts one task per GPU without torchrun's
    variables; submitit knows how to derive them (master address from the node list)."""
    try:
        import submitit  # noqa: PLC0415 -- optional, comes with the `slurm` extra
    except ImportError as exc:
        raise RuntimeError("multi-task Slurm job without torchrun variables: install the `slurm` extra "
                           "(pip install -e '.[slurm]') or launch with torchrun inside the job") from exc
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def destroy_process_group() -> None:
    """Destroy the default process group if one exists (no barrier: a rank that failed must not hang
    the others at exit)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), True)
    return DistInfo()


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def all_reduce_mean(values: dict[str, float], device) -> dict[str, float]:
    """Average scalar logs over ranks (one collective for the whole dict)."""
    info = current()
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist())}


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not current().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj):
    """Every rank's ``obj`` as a list in rank order (CPU objects; used for sample shards)."""
    info = current()
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def shard_fsdp2(root: torch.nn.Module, blocks) -> None:
    """FSDP2: shard each transformer block, then the root (embedders, final layer, heads)."""
    from torch.distributed.fsdp import fully_shard  # noqa: PLC0415

    for block in blocks:
        fully_shard(block)
    # The root reshards after forward too: the EMA teacher runs forward-only (no backward would
    # reshard it), and its EMA update needs sharded parameters on both sides.
    fully_shard(root, reshard_after_forward=True)


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions  # noqa: PLC0415

    # Full (unsharded) tensors on CPU, rank 0 only: a checkpoint loads with or without FSDP.
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(module: torch.nn.Module) -> dict:
    """Collective: every rank calls it; rank 0 receives the full state dict."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict  # noqa: PLC0415

    return get_model_state_dict(module, options=_options())


def load_full_model_state(module: torch.nn.Module, state: dict, strict: bool = True) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict  # noqa: PLC0415

    set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True, strict=strict))


def full_optimizer_state(module: torch.nn.Module, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict  # noqa: PLC0415

    return get_optimizer_state_dict(module, optimizer, options=_options())


def load_full_optimizer_state(module: torch.nn.Module, optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict  # noqa: PLC0415

    set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))


class BatchRandom:
    """Random draws for the local shard of a global batch.

    Every rank holds the same RNG state and draws the *global* batch ``(world * B_local, ...)``,
    then keeps its own contiguous chunk. An N-process run therefore sees exactly the noise,
    timesteps, masks and label drops of a 1-process run over the same global batch.
    """

    def __init__(self, rank: int = 0, world_size: int = 1):
        self.rank, self.world_size = rank, world_size

    def _shard(self, draw, shape, **kw) -> Tensor:  # (B_local, ...) from a (world * B_local, ...) draw
        shape = tuple(shape)
        if self.world_size == 1:
            return draw(shape, **kw)
        full = draw((shape[0] * self.world_size, *shape[1:]), **kw)
        return full[self.rank * shape[0]:(self.rank + 1) * shape[0]]

    def rand(self, shape, device=None, dtype=None) -> Tensor:
        return self._shard(torch.rand, shape, device=device, dtype=dtype)

    def randn(self, shape, device=None, dtype=None) -> Tensor:
        return self._shard(torch.randn, shape, device=device, dtype=dtype)

    def randn_like(self, x: Tensor) -> Tensor:
        return self.randn(x.shape, device=x.device, dtype=x.dtype)


SINGLE_PROCESS = BatchRandom()


def gather_train_state(train_module: torch.nn.Module, ema, objective, optimizer) -> tuple[dict, dict, dict, dict]:
    """FSDP2: (model, ema, objective heads, optimizer) states gathered to full tensors (a collective).

    ``train_module`` is the sharded ``TrainModule`` (keys ``model.*`` and ``objective.*``); the
    layout matches the unsharded checkpoint, so either setting can read the weights.
    """
    full = full_model_state(train_module)
    heads = objective.trainable_state_dict().keys()
    model = {k[len("model."):]: v for k, v in full.items() if k.startswith("model.")}
    heads_state = {k[len("objective."):]: v for k, v in full.items() if k[len("objective."):] in heads}
    ema_state = {"model": full_model_state(ema.model), "num_updates": ema.num_updates}
    return model, ema_state, heads_state, full_optimizer_state(train_module, optimizer)


def load_train_state(train_module: torch.nn.Module, ema, objective, optimizer, state: dict) -> None:
    """FSDP2: the inverse of :func:`gather_train_state` (every rank loads its shards)."""
    full = {**{f"model.{k}": v for k, v in state["model"].items()},
            **{f"objective.{k}": v for k, v in state["objective"].items()}}
    load_full_model_state(train_module, full, strict=not objective.frozen_prefixes)
    load_full_model_state(ema.model, state["ema"]["model"])
    ema.num_updates = int(state["ema"]["num_updates"])
    load_full_optimizer_state(train_module, optimizer, state["optimizer"])
