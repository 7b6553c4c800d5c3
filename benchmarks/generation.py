"""Generation throughput, engine against engine, on one model, one prompt set and one sampling setting.

    python benchmarks/generation.py --spec specs/demo.yaml --model teacher_base

Engines: `hf` runs transformers' generate twice, with a dynamic and with a static KV cache,
through the same `runtime.generate.sample` that the generate stage uses. Every engine loads the
same saved model directory, so "end-to-end" (load + generate) compares start-up too; the
break-even line says from how many generated tokens on the faster engine's start-up pays off.
Prompts are the spec's distill questions through the model's chat template, as the stage sends them.

The vLLM half (`--engine vllm`) is not here yet: it lands with the GPU run that validates it
(README, "Engines"); until then `--engine vllm` says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

NO_VLLM = (
    "--engine vllm is not available yet: the vLLM half of this benchmark lands with the GPU run that "
    "validates it (README, \"Engines\"); use --engine hf"
)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="benchmarks/generation.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", required=True, help="a spec file: its task gives the prompts")
    p.add_argument("--model", required=True, help="a model id declared in the spec's `models:`")
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf", help="hf: dynamic and static cache")
    p.add_argument("--questions", type=int, default=256, help="distill questions to answer")
    p.add_argument("--samples", type=int, default=4, help="samples per question")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=64, help="prompts per HF generate call (vLLM batches itself)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="generate this many times after one load; keep the fastest "
        "(other processes on a shared machine only ever slow a run down)",
    )
    p.add_argument("--json", help="also write the results here")
    return p.parse_args(argv)


def resolve(spec_file: str, model_id: str):
    """(task with absolute data paths, ModelRef, spec seed) from the spec, through the compiler's checks."""
    from compiler.spec.errors import Problem, SpecError, did_you_mean
    from compiler.plan.load import load_spec_with_positions
    from compiler.plan import build_plan
    from compiler.spec.contract import ModelRef

    spec, positions = load_spec_with_positions(spec_file)
    plan = build_plan(spec, positions, spec_file)
    if model_id not in spec.models:
        hint = did_you_mean(model_id, spec.models) or "declared: " + ", ".join(spec.models)
        raise SpecError(
            [Problem(f"no model {model_id!r} under models:", "--model", spec_file, value=model_id, hint=hint)]
        )
    m = plan.resolved.models[model_id]
    ref = ModelRef(
        name=model_id,
        source="init" if m.init else "path",
        init=m.init,
        path=m.path,
        revision=m.revision,
        trust_remote_code=m.trust_remote_code,
        base=model_id,
    )
    return plan.jobs[0].config.task, ref, spec.seed


def hf_engine(model_dir: str, task, texts: list[str], args, dtype, device, cache: str) -> dict:
    """Load the saved model and sample every prompt batch, as the generate stage does."""
    import torch

    from compiler.spec.contract import ModelRef
    from runtime.lib import models
    from runtime.lib.sampling import sample

    t0 = time.perf_counter()
    ref = ModelRef(name="bench", source="path", path=model_dir, base="bench")
    model, tok = models.load_causal_lm(ref, task, args.seed, dtype, padding_side="left")
    model.to(device).eval()
    _sync(device)
    load_s, runs = time.perf_counter() - t0, []
    for _ in range(args.repeats):  # the same seeds each time: the same tokens, only the time differs
        batches = []
        for first in range(0, len(texts), args.batch_size):
            torch.manual_seed(args.seed + first)
            t = time.perf_counter()
            outs = sample(
                model,
                tok,
                texts[first : first + args.batch_size],
                args.temperature,
                args.samples,
                args.max_new_tokens,
                args.top_p,
                cache=cache,
            )
            _sync(device)
            batches.append((time.perf_counter() - t, sum(o.num_tokens for o in outs)))
        runs.append(batches)
    del model
    return _result(f"hf {cache}", load_s, min(runs, key=lambda b: sum(s for s, _ in b)))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _result(name: str, load_s: float, batches: list[tuple[float, int]]) -> dict:
    gen_s, tokens = sum(s for s, _ in batches), sum(n for _, n in batches)
    rest_s, rest_n = sum(s for s, _ in batches[1:]), sum(n for _, n in batches[1:])
    return {
        "engine": name,
        "load_s": load_s,
        "first_batch_s": batches[0][0],
        "generate_s": gen_s,
        "tokens": tokens,
        "tokens_per_s": tokens / gen_s,
        "steady_tokens_per_s": rest_n / rest_s if rest_s else tokens / gen_s,
        "end_to_end_s": load_s + gen_s,
    }


def table(results: list[dict]) -> str:
    head = (
        f"{'engine':<12}{'load s':>9}{'1st batch s':>13}{'generate s':>12}{'tokens':>9}{'tokens/s':>11}"
        f"{'steady tok/s':>14}{'end-to-end s':>14}"
    )
    rows = [
        f"{r['engine']:<12}{r['load_s']:>9.2f}{r['first_batch_s']:>13.2f}{r['generate_s']:>12.2f}"
        f"{r['tokens']:>9}{r['tokens_per_s']:>11.0f}{r['steady_tokens_per_s']:>14.0f}{r['end_to_end_s']:>14.2f}"
        for r in results
    ]
    return "\n".join([head] + rows)


def ratios(results: list[dict]) -> list[str]:
    """Every engine against the first (hf dynamic): tokens/s, end-to-end, and where start-up stops mattering."""
    base, lines = results[0], []
    for r in results[1:]:
        lines.append(
            f"{r['engine']} / {base['engine']}: tokens/s x{r['tokens_per_s'] / base['tokens_per_s']:.2f}, "
            f"end-to-end time x{r['end_to_end_s'] / base['end_to_end_s']:.2f}"
        )
        extra_start = r["load_s"] + r["first_batch_s"] - base["load_s"] - base["first_batch_s"]
        saved_per_token = 1 / base["steady_tokens_per_s"] - 1 / r["steady_tokens_per_s"]
        if extra_start > 0 and saved_per_token > 0:
            lines.append(
                f"  {r['engine']} starts {extra_start:.1f} s slower and wins above about "
                f"{extra_start / saved_per_token:,.0f} generated tokens; below that {base['engine']} wins"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.engine != "hf":
        print(NO_VLLM, file=sys.stderr)
        return 2
    from compiler.spec.errors import DistillcError

    try:
        task, ref, spec_seed = resolve(args.spec, args.model)
    except DistillcError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    return run(args, task, ref, spec_seed)


def run(args, task, ref, spec_seed: int) -> int:
    import torch
    import transformers

    from runtime.lib import models
    from runtime.lib import task as taskdata
    from runtime.lib.common import torch_setup
    from runtime.lib.sampling import prompts

    transformers.utils.logging.disable_progress_bar()  # the table is the output
    device, dtype = torch_setup(args.seed, args.threads, args.device, args.precision)
    precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    model, tok = models.load_causal_lm(ref, task, spec_seed, dtype)
    params = sum(p.numel() for p in model.parameters())
    texts = prompts(taskdata.questions(task, "distill", spec_seed)[: args.questions], task, tok)
    with tempfile.TemporaryDirectory() as model_dir:  # every engine loads the same files
        models.save(model, tok, model_dir)
        del model
        hf_engine(
            model_dir,
            task,
            texts[:2],
            argparse.Namespace(**{**vars(args), "max_new_tokens": 4, "repeats": 1}),
            dtype,
            device,
            "dynamic",
        )  # warm-up, untimed: one-time process costs hit no engine
        results = [hf_engine(model_dir, task, texts, args, dtype, device, c) for c in ("dynamic", "static")]
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(
        f"model {args.model} of {args.spec}: {params:,} parameters; {hw}, {precision}; "
        f"torch {torch.__version__}, transformers {transformers.__version__}"
    )
    print(
        f"{len(texts)} questions x {args.samples} samples, temperature {args.temperature}, top_p {args.top_p}, "
        f"max_new_tokens {args.max_new_tokens}, {args.batch_size} prompts per HF batch, seed {args.seed}, "
        f"fastest of {args.repeats} run(s)"
    )
    print(table(results))
    print("\n".join(ratios(results)))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"settings": vars(args), "parameters": params, "hardware": hw, "results": results}, indent=2)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
