"""Real responses of SmolLM2-135M-Instruct, for the answer reader's test corpus (issue 19).

The reader (runtime/lib/answers.py) was written against tiny self-built models that always
stop and write one "####". A real instruct model rambles, repeats its marker and is cut
off at max_new_tokens. This script writes what such a model really says to synthetic
questions, so that tests/data/real_responses.jsonl can hold those texts with hand-read
expected answers. It is the record of how the corpus was made; rerun it to reproduce it:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/real_responses.py --out /tmp/raw.jsonl

Seeded (torch seed per temperature, 1 thread): same machine and versions -> same texts.
Prompts go through the tokenizer's chat template exactly as runtime.lib.sampling.prompts does.
One run of LONGEST new tokens per temperature; the shorter limits are its first 48 / 128 tokens:
exactly what a run with that max_new_tokens writes (greedy is prefix-consistent, and a sampled
run draws the same random numbers for its first steps), at a third of the cost on 2 busy cores.
Only distinct texts per question are kept (a response that stopped early is the same at every limit).
Expected answers are NOT written here: they are read by hand into the corpus file.
"""

from __future__ import annotations

import argparse
import json
import time

MODEL = "/work/cache/smollm2"
SYSTEM = "Solve the math problem step by step. End your answer with '#### <number>'."  # specs/paper_gsm8k.yaml
# (name, synthetic task, system prompt): one-step and two-step questions, with and without the marker prompt
TASKS = [
    ("one_step", dict(min_steps=1, max_steps=1, max_number=9), SYSTEM),
    ("two_step", dict(min_steps=2, max_steps=2, max_number=9), SYSTEM),
    ("one_step_plain", dict(min_steps=1, max_steps=1, max_number=9), ""),
]
QUESTIONS = {"one_step": 12, "two_step": 12, "one_step_plain": 6}
# temperature -> max_new_tokens limits: greedy and sampled, short limits so that cut-off markers occur
SETTINGS = {0.0: (48, 128, 256), 0.7: (128, 256), 1.0: (48, 256)}
SFT_SETTINGS = {0.0: (32, 96), 1.0: (32, 96)}  # the tuned model (--sft-steps): short answers, short limits


def task_spec(kind: str):
    from compiler.spec.schema import SyntheticTask, TaskSpec

    name, synth, system = next(t for t in TASKS if t[0] == kind)
    size = QUESTIONS[kind]
    cfg = SyntheticTask(**synth, gold_size=0, dev_size=0, distill_size=size, test_size=size)
    return TaskSpec(format="gsm8k", synthetic=cfg, system_prompt=system)


def generate(model, tok, texts: list[str], temperature: float, limits: tuple, seed: int) -> list[dict[int, tuple]]:
    """Per prompt, {limit: (text, cut_off)}; cut_off = no end-of-turn token within the limit."""
    import torch

    torch.manual_seed(seed)
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    kw = (
        dict(do_sample=False) if temperature == 0 else dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
    )
    with torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=max(limits),
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            use_cache=True,
            **kw,
        )
    gen = out[:, enc["input_ids"].shape[1] :]
    rows = [{} for _ in texts]
    for limit in limits:
        part = gen[:, :limit]
        stopped = (part == tok.eos_token_id).any(1).tolist()
        for i, (t, s) in enumerate(zip(tok.batch_decode(part, skip_special_tokens=True), stopped)):
            rows[i][limit] = (t.strip(), not s)
    return rows


def tune(model, tok, steps: int, lr: float, seed: int) -> None:
    """A few steps of full SFT on gold "... #### N" solutions of other synthetic questions (the answer
    format a student distilled from such targets writes): loss on the response tokens only."""
    import torch

    from runtime.lib import task as taskdata

    spec = task_spec("two_step").model_copy(
        update={
            "synthetic": task_spec("two_step").synthetic.model_copy(update={"gold_size": 8 * steps, "min_steps": 1})
        }
    )
    rows = taskdata.gold(spec, "gold", seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    tok.padding_side = "right"
    for step in range(steps):
        batch = rows[8 * step : 8 * step + 8]
        prompts = [
            tok.apply_chat_template(taskdata.messages(r, spec), add_generation_prompt=True, tokenize=False)
            for r in batch
        ]
        full = [p + r["answer"] + tok.eos_token for p, r in zip(prompts, batch)]
        enc = tok(full, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = enc["input_ids"].clone()
        for i, p in enumerate(prompts):
            labels[i, : len(tok(p, add_special_tokens=False)["input_ids"])] = -100
        labels[enc["attention_mask"] == 0] = -100
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        print(f"sft step {step + 1}/{steps}: loss {loss.item():.3f}", flush=True)
    model.eval()
    tok.padding_side = "left"


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.lib import sampling
    from runtime.lib import task as taskdata

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sft-steps", type=int, default=0, help="first tune the model this many steps (see tune)")
    ap.add_argument("--sft-lr", type=float, default=2e-5)
    args = ap.parse_args()
    torch.set_num_threads(1)  # on 2 cores shared with others, 2 threads ran 4x slower than 1
    tok = AutoTokenizer.from_pretrained(MODEL)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    name, settings = "SmolLM2-135M-Instruct", SETTINGS
    if args.sft_steps:
        tune(model, tok, args.sft_steps, args.sft_lr, args.seed)
        name, settings = f"{name} + {args.sft_steps} SFT steps (lr {args.sft_lr}) on '#### N' targets", SFT_SETTINGS
    rows, texts = [], []
    for kind in QUESTIONS:
        spec = task_spec(kind)
        qs = taskdata.gold(spec, "test", args.seed)
        rows += [(kind, spec, r) for r in qs]
        texts += sampling.prompts(qs, spec, tok)
    with open(args.out, "w") as f:
        for ti, (temp, limits) in enumerate(settings.items()):
            t0, seed = time.time(), args.seed * 1000 + ti
            outs = generate(model, tok, texts, temp, limits, seed)
            for (kind, spec, row), by_limit in zip(rows, outs):
                seen = set()
                for limit, (text, cut) in by_limit.items():
                    if text in seen:
                        continue
                    seen.add(text)
                    f.write(
                        json.dumps(
                            {
                                "task": kind,
                                "question_id": row["id"],
                                "question": row["question"],
                                "target": row["target"],
                                "system_prompt": spec.system_prompt,
                                "model": name,
                                "temperature": temp,
                                "max_new_tokens": limit,
                                "seed": seed,
                                "cut_off": cut,
                                "text": text,
                            }
                        )
                        + "\n"
                    )
            f.flush()
            print(f"T={temp} limits={limits}: {len(outs)} prompts in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
