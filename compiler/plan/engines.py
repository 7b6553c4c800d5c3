"""The `engine:` field of generate, eval and rl stages, checked before any GPU time is spent.

`engine: vllm` is refused in this version: its code path has never run on a GPU, and a
spec should fail at `distillc validate`, not hours into a workflow when the first vLLM
stage starts. The rules that will outlive that refusal (vLLM needs a GPU; PPO has no
vLLM rollouts) are checked as well, so a spec written for the GPU run is right already.
"""

from __future__ import annotations

NOT_YET = (
    "engine: vllm is not available yet in this version: the vLLM engine waits for a validation "
    "run on a GPU (throughput and accuracy against engine: hf)"
)
NOT_YET_HINT = "use engine: hf (the default); README, \"Engines\", says what the GPU run must show first"


def check_engine(pl, sid: str, default_gpus: int) -> None:
    """Add the planner's problems for one stage's `engine` (a stage without the field has none)."""
    st = pl.spec.stages[sid]
    if getattr(st, "engine", "hf") != "vllm":
        return
    at = ("stages", sid, "engine")  # rl's own rule (PPO has no vLLM rollouts) is RlStage.check
    gpus = st.resources.gpus
    if (gpus if gpus is not None else default_gpus) == 0:
        said = "resources.gpus is 0" if gpus == 0 else f"resources.gpus is unset, and {st.kind} stages default to 0"
        pl.problem(
            at,
            f"engine: vllm runs only on a GPU, but this stage asks for none ({said})",
            st.engine,
            "set resources: {gpus: 1} on this stage, or use engine: hf",
        )
    pl.problem(at, NOT_YET, st.engine, NOT_YET_HINT)
