"""Best-of-k reranking: of a question's k sampled responses, keep the one a reward model scores highest.

An eval stage with `rerank: <reward_model stage>` samples k responses per question (lm-eval's repeats),
scores each with that reward model (runtime.lib.reward_scoring, either head) and reports the accuracy of
the top-scored one beside the single sample and the majority vote: what the reward model is worth at test
time, without RL. lm-eval has no reward model, so this runs after it, over its logged responses, and is
reported under the filter name RERANK (compiler.spec.lm_eval_filters) with its strict twin, read and
judged by the same code as lm-eval's filters (runtime.lib.answers: extract, extract_strict, same).

The choice and the judging are pure Python (pick, judge); torch is imported only by `score`.
"""

from __future__ import annotations

import math

from compiler.spec.lm_eval_filters import RERANK, strict

from . import answers, eval_lm

# What each samples.jsonl row records: every response's score (in response order), the index of the
# response kept, and whether its answer is right (as "correct" is for the single sample).
SCORES, PICK, CORRECT = f"{RERANK}_scores", f"{RERANK}_pick", f"{RERANK}_correct"


def pick(scores: list[float]) -> int:
    """The index of the top score. Ties go to the FIRST of the tied in sample order (the order of lm-eval's
    repeats, which is the order of a samples.jsonl row's responses): deterministic, never a coin flip, and
    a reward model that scores every response alike picks the single sample. A NaN score never wins."""
    if not scores:
        raise ValueError("pick: no scores (a question with no responses)")
    return max(range(len(scores)), key=lambda i: (-math.inf if math.isnan(scores[i]) else scores[i], -i))


def judge(rows: list[dict], scores: list[list[float]], fmt: str) -> dict[str, dict]:
    """Record each row's scores, pick and correctness (SCORES, PICK, CORRECT); return the filters'
    accuracies {RERANK: ..., RERANK_strict: ...}. `scores[i]`: row i's responses' scores, in order.
    Correct: the kept response's answer equals the target, as lm-eval's process_results judges."""
    if len(scores) != len(rows):
        raise ValueError(f"judge: {len(scores)} score lists for {len(rows)} questions")
    right, right_strict = [], []
    for row, values in zip(rows, scores):
        if len(values) != len(row["responses"]):
            raise ValueError(f"judge: {len(values)} scores for {len(row['responses'])} responses")
        top = pick(values)
        kept = row["responses"][top]
        row[SCORES], row[PICK] = [float(v) for v in values], top
        row[CORRECT] = answers.same(answers.extract(kept, fmt), row["target"])
        right.append(row[CORRECT])
        right_strict.append(answers.same(answers.extract_strict(kept, fmt), row["target"]))
    return {RERANK: accuracy(right), strict(RERANK): accuracy(right_strict)}


def accuracy(correct: list[bool]) -> dict:
    """{"accuracy", "stderr"} as lm-eval reports a mean metric (eval_lm.mean_metric); None with no questions."""
    return eval_lm.mean_metric([float(c) for c in correct]) if correct else {"accuracy": None, "stderr": None}


def score(path: str, prompts: list[list[dict]], rows: list[dict], batch_size: int, device, dtype) -> list[list[float]]:
    """Every response of every row scored by the reward model saved at `path`, row i with chat prompt
    prompts[i]; one batch order (questions in order, each question's responses in order), so a rerun
    scores the same."""
    from .reward_scoring import load, scores

    model, tok, max_length = load(path, device, dtype)
    convs = [p + [{"role": "assistant", "content": t}] for p, r in zip(prompts, rows) for t in r["responses"]]
    flat = scores(model, tok, convs, batch_size, max_length)
    out, at = [], 0
    for r in rows:
        out.append(flat[at : at + len(r["responses"])])
        at += len(r["responses"])
    return out
