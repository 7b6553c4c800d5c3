"""One stage in several processes (`resources.processes`): who is who, and where they wait for each other.

A training stage with `processes: N` runs as N copies of its program (runtime/lib/launch.py on CPU,
accelerate's launcher on GPUs), each told its RANK and the WORLD_SIZE in its environment. The
trainers (transformers' Trainer, TRL's) do the data-parallel part: every process holds the whole
model, each takes its own rows of every batch (a DistributedSampler: rank r reads rows r, r+N, ... of
the shuffled epoch, so the batches of a step are disjoint), and the gradients are averaged before
each optimizer step, so the copies stay identical. What changes against one process: a step sees N
per-device batches, so `batch_size` (per device) times N rows; an epoch takes 1/N of the steps;
sums are reduced in another order, so numbers are close, never bit-identical. RL keeps its
`batch_size` (responses per rollout) and splits it (runtime/rl.py).

The rules this module serves, so that a run in N processes looks like a run in one:
- every file is written once, by rank 0 (`is_main`): outputs, metrics, model card, progress.json,
  terminal and log lines; the Trainer writes its checkpoints from rank 0 too (each rank adds its RNG state);
- where rank 0 changes files the others read (a checkpoint folder emptied, a torn checkpoint dropped,
  checkpoints removed at the end), the others wait at `barrier`;
- after training, work only rank 0 needs (scoring, the model folder) is rank 0's alone (`main_alone`):
  the others end there, and the launcher waits for every process before the job ends.
Nothing here imports torch unless the stage runs in several processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

RENDEZVOUS = "DISTILLC_RENDEZVOUS"  # the launcher's rendezvous file (runtime/lib/launch.py)
LAUNCHER = "DISTILLC_LAUNCHER_PID"  # the launcher's pid: a process whose launcher died ends too


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world() -> int:
    """How many processes run this stage (1 when not launched in several)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def who() -> str:
    """`process 2 of 2` in messages of a stage in several processes, else ''."""
    return f"process {rank() + 1} of {world()}" if world() > 1 else ""


def join() -> None:
    """Join the other processes of this stage, when runtime/lib/launch.py started it.

    The rendezvous is a file the launcher named (torch's FileStore): no port to choose, so two
    stages that start at once never collide. accelerate and the Trainer find the group already
    made and use it (gloo: the CPU backend). Under accelerate's GPU launcher the Trainer makes
    the group itself (NCCL), as it always has.
    """
    path = os.environ.get(RENDEZVOUS)
    if world() == 1 or not path:
        return
    _die_with_launcher()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank(), world_size=world())


def _die_with_launcher() -> None:
    """SIGKILL this process when its launcher dies (Linux): `kill -9` of the launcher alone must not leave
    workers training into the checkpoint folder that the rerun will use."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the launcher's process group still takes them down
        return
    if str(os.getppid()) != os.environ.get(LAUNCHER, str(os.getppid())):
        os._exit(1)  # the launcher died before the line above: nobody waits for this process


def barrier() -> None:
    """Wait until every process of the stage gets here (a no-op in one process)."""
    if world() == 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        return
    from accelerate import PartialState  # type: ignore[import-untyped]  # GPU launch: the group the Trainer makes

    PartialState().wait_for_everyone()


def main_alone() -> bool:
    """After the collective part (training): wait for every process, then True on rank 0 only.

    The rest of the stage (scores, metrics, the model folder) is rank 0's; the other processes
    return and end. They do not wait for rank 0 at a barrier, which would time out (gloo: 30 min)
    behind a long scoring pass; the launcher waits for all of them before the job ends.
    """
    barrier()
    return is_main()


def total(values: list[float]) -> list[float]:
    """The sum over the processes of each value (each process passes its own part)."""
    if world() == 1:
        return list(values)
    import torch
    import torch.distributed as dist

    barrier()  # makes the group under accelerate's GPU launch, if the Trainer has not yet
    on = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces GPU tensors only
    t = torch.tensor(values, dtype=torch.float64, device=on)
    dist.all_reduce(t)
    return t.tolist()


def batch(args) -> dict[str, int]:
    """The batch of one optimizer step, from a trainer's arguments: the record a model card and metrics keep.

    effective_batch_size = per-device batch x processes x gradient accumulation: the rows (rl: the
    responses) whose averaged gradient makes one step.
    """
    per_device, accum = int(args.per_device_train_batch_size), int(args.gradient_accumulation_steps)
    return {
        "processes": world(),
        "per_device_batch_size": per_device,
        "grad_accum": accum,
        "effective_batch_size": per_device * world() * accum,
    }


@contextmanager
def shared_folder() -> Iterator[str]:
    """A temporary folder that every process of the stage sees (rank 0 makes it and removes it).

    Once the processes are joined, transformers' save_pretrained writes on rank 0 only, so a
    save-then-load round trip must go through one folder: rank 0 saves, all load (after `barrier`).
    """
    import shutil
    import tempfile

    if world() == 1:
        with tempfile.TemporaryDirectory() as tmp:
            yield tmp
        return
    import torch.distributed as dist

    barrier()
    box = [tempfile.mkdtemp(prefix="distillc-shared-") if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    try:
        yield str(box[0])
    finally:
        barrier()
        if is_main():
            shutil.rmtree(str(box[0]), ignore_errors=True)
