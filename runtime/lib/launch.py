"""`python -m runtime.lib.launch --processes N runtime.<kind> --config C --threads T ...`: one stage, N CPU processes.

The rule of a training stage with `resources: {processes: N}` and no GPUs starts this
(compiler/plan/render.py); it starts N copies of the stage program and waits for them.
What the copies do together is runtime/lib/ranks.py's; this only starts and ends them.

Why not torchrun or `accelerate launch`: `accelerate launch --cpu` starts one process (N need
mpirun), and torchrun starts each worker in a session of its own and closes fd 3. Here:
- the workers stay in the launcher's process group and die with the launcher (ranks.join sets
  PR_SET_PDEATHSIG): a `kill -9` of the run (its process group) or of the launcher leaves no
  worker training into the checkpoint folder that the rerun resumes from;
- they inherit every descriptor, fd 3 included: rank 0 prints the stage's progress lines on
  Snakemake's terminal as one process does, and any rank its failure;
- they meet through a fresh file (torch's FileStore), not a port: stages started at the same
  moment never collide, and nothing in the stage config depends on it;
- the stage's threads are split: each process gets `--threads T // N` (at least 1), and
  OMP_NUM_THREADS to match, so N processes on T cores do not oversubscribe them;
- CUDA is hidden: with `gpus: 0` the processes are CPU processes (gloo), wherever the job lands.
When one process fails, the others are stopped and the launcher exits with its code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from .ranks import LAUNCHER, RENDEZVOUS

GRACE_S = 10.0  # how long stopped workers get to exit on SIGTERM before SIGKILL


def split_threads(args: list[str], processes: int) -> tuple[list[str], int]:
    """The stage's arguments with `--threads T` replaced by each process's share, and that share."""
    out, share = list(args), 1
    if "--threads" in out:
        i = out.index("--threads") + 1
        share = max(1, int(out[i]) // processes)
        out[i] = str(share)
    return out, share


def worker_env(rank: int, processes: int, rendezvous: str, threads: int) -> dict[str, str]:
    return {
        **os.environ,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(processes),
        "LOCAL_WORLD_SIZE": str(processes),
        RENDEZVOUS: rendezvous,
        LAUNCHER: str(os.getpid()),
        "OMP_NUM_THREADS": str(threads),
        "ACCELERATE_USE_CPU": "true",
        "CUDA_VISIBLE_DEVICES": "",
    }


def wait_all(procs: list[subprocess.Popen]) -> int:
    """0 when every process ends with 0; else the first failure's code, once the others are stopped."""
    while True:
        codes = [p.poll() for p in procs]
        failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            r, code = failed[0]
            print(f"launch: process {r + 1} of {len(procs)} exited with {code}; stopping the others", file=sys.stderr)
            stop(procs)
            return code if code > 0 else 128 - code  # a signal -s: the shell's 128 + s
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.2)


def stop(procs: list[subprocess.Popen], sig: int = signal.SIGTERM) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    deadline = time.monotonic() + GRACE_S
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.lib.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, required=True, help="how many processes run the stage")
    parser.add_argument("module", help="the stage program, e.g. runtime.sft")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    ns = parser.parse_args(argv)
    args, threads = split_threads(ns.args, ns.processes)
    folder = tempfile.mkdtemp(prefix="distillc-rendezvous-")
    procs: list[subprocess.Popen] = []

    def forward(signum, frame):  # Snakemake or a user stops the job: stop the workers, then end
        stop(procs, signum)
        shutil.rmtree(folder, ignore_errors=True)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        for rank in range(ns.processes):
            env = worker_env(rank, ns.processes, os.path.join(folder, "store"), threads)
            procs.append(subprocess.Popen([sys.executable, "-m", ns.module, *args], env=env, close_fds=False))
        return wait_all(procs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
