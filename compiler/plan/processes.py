"""`resources.processes`: a training stage in several data-parallel processes, checked before anything runs.

Why under `resources:` and not a stage field: it says how a stage runs, like `gpus` (whose count
it follows by default), and the stage config leaves resources out, so adding the field changed
no finished run's stage config. It is no mere scheduling knob, though: each process takes its own
rows of a batch, so a step sees `processes` per-device batches (rl splits its rollout batch
instead). The rule's launch prefix carries it (compiler/plan/render.py), and a changed rule
parameter reruns the stage, as a changed stage field would; checkpoints of another count are not
resumed (runtime/lib/checkpoints.py).

On GPUs one process drives one GPU: `processes` must equal `gpus` (accelerate's launcher, as
before). Without GPUs the stage runs in CPU processes (runtime/lib/launch.py, gloo), each with
its share of the stage's cpus.
"""

from __future__ import annotations


def check_processes(pl, sid: str) -> None:
    """Add the planner's problems for one stage's `resources.processes` (unset: nothing to check)."""
    st = pl.spec.stages[sid]
    n = st.resources.processes
    if n is None:
        return
    at = ("stages", sid, "resources", "processes")
    r = st.resources.resolved(st.default_resources)
    if n > 1 and not st.trains:
        pl.problem(
            at,
            f"only training stages run in several processes; {st.kind} stages run in one",
            n,
            "remove `processes` from this stage",
        )
    elif r.gpus and n != r.gpus:
        pl.problem(
            at,
            f"with GPUs each process drives one GPU, so processes must equal gpus ({r.gpus})",
            n,
            "remove `processes` (it follows gpus), or set gpus to the same number",
        )
    elif not r.gpus and n > 1 and (r.cpus or 1) < n:
        pl.problem(
            at,
            f"{n} CPU processes need {n} cpus (a core each); this stage asks for {r.cpus}",
            n,
            f"set resources.cpus to {n} or more, or leave cpus unset (it follows processes)",
        )
    elif not r.gpus and n > 1 and st.device == "cuda":
        pl.problem(
            at,
            "without GPUs (gpus: 0) the processes are CPU processes, but this stage asks for device: cuda",
            n,
            "set resources.gpus to the number of processes, or device: auto",
        )
