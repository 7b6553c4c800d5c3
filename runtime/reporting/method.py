"""The report's reading of the method: reward-model quality against gold, the RL reward
ladder, and one plain sentence per key comparison.

Pure Python over the summary's own numbers and the stages' output files, so the
words can never disagree with the tables. Gold answers are read here, after the
fact, as for pseudo-label precision; no stage upstream of eval saw them (except
an rl stage with `reward: gold`, which the spec names as the oracle).
"""

from __future__ import annotations

from collections import defaultdict

from compiler.spec.rewards import LADDER, REWARD_SOURCES

ALPHA = 0.05  # a difference is called real when McNemar p < ALPHA (and its bootstrap CI excludes 0)


# ----------------------------------------------------------------------------- labels
def reward_of(spec: dict, stage_id: str) -> str | None:
    """The reward source of an rl stage ("model" when the spec left the default)."""
    st = (spec.get("stages") or {}).get(stage_id) or {}
    return st.get("reward", "model") if st.get("kind") == "rl" else None


def model_label(spec: dict, name: str, role: str, names: dict) -> str:
    """A role's name, qualified where several models share it: which reward an RL student had."""
    reward = reward_of(spec, name)
    base = names.get(role, name)
    return f"{base} ({REWARD_SOURCES[reward].short})" if reward else base


def eval_label(spec: dict, eval_id: str, model: str, role: str, names: dict) -> str:
    """The model's label, plus how this eval decodes when it samples: comparisons use its first sample."""
    st = (spec.get("stages") or {}).get(eval_id) or {}
    label = model_label(spec, model, role, names)
    return f"{label}, one sample at T={st['temperature']:g}" if st.get("temperature") else label


def rerank_label(spec: dict, eval_id: str, model: str, role: str, names: dict) -> str | None:
    """'SFT student, best of 4 by reward model rm' for an eval with `rerank`, else None."""
    st = (spec.get("stages") or {}).get(eval_id) or {}
    if not st.get("rerank"):
        return None
    return f"{model_label(spec, model, role, names)}, best of {st.get('samples')} by reward model {st['rerank']}"


# ----------------------------------------------------------------------------- reward model vs gold
def rm_vs_gold(scores: list[dict], gold: dict[str, str], same) -> dict | None:
    """How well the reward model ranks one model's samples of held-out questions, judged by gold.

    within-question AUC: over every (gold-correct, gold-wrong) pair of responses to the
    same question, the share the model scores in the right order (ties count half);
    0.5 = it cannot tell a right answer from a wrong one. best-of-k: accuracy when the
    top-scored sample of each question is kept (ties: lowest sample id), against the
    mean sample's accuracy and pass@k (some sample right): the room a reranker has.
    """
    by_q: dict[str, list[dict]] = defaultdict(list)
    for r in scores:
        if r["question_id"] in gold:
            by_q[r["question_id"]].append(r)
    if not by_q:
        return None
    wins = pairs = mixed = 0.0
    best, mean, any_ok = [], [], []
    for q, rows in sorted(by_q.items()):
        ok = [same(r["answer"], gold[q]) for r in rows]
        right = [r["score"] for r, o in zip(rows, ok) if o]
        wrong = [r["score"] for r, o in zip(rows, ok) if not o]
        if right and wrong:
            mixed += 1
            for a in right:
                for b in wrong:
                    wins += 1.0 if a > b else 0.5 if a == b else 0.0
                    pairs += 1
        top = max(range(len(rows)), key=lambda i: (rows[i]["score"], -rows[i]["sample_id"]))
        best.append(ok[top])
        mean.append(sum(ok) / len(ok))
        any_ok.append(any(ok))
    n = len(by_q)
    return {
        "questions": n,
        "samples": len(scores),
        "mixed_questions": int(mixed),
        "auc_pairs": int(pairs),
        "within_question_auc": wins / pairs if pairs else None,
        "best_of_k": sum(best) / n,
        "mean_sample": sum(mean) / n,
        "pass_at_k": sum(any_ok) / n,
        "k": round(sum(len(r) for r in by_q.values()) / n, 2),
    }


def rm_not_learned(name: str, m: dict) -> str | None:
    """A sentence when a reward model has not learned, else None.

    Either sign is enough: its last training loss is still within 10% of ln 2 (where
    the pairwise and cross-entropy losses of a model that scores everything alike sit;
    a verifier's next-token loss is not on that scale and is not judged this way), or
    its held-out pairwise accuracy is within the binomial 95% noise band around 50%.
    """
    import math

    why = []
    loss = m.get("loss")
    if m.get("loss_type") in ("pairwise", "pointwise", "both") and loss is not None and loss > 0.9 * math.log(2):
        why.append(f"its training loss ended at {loss:.3f}, barely below ln 2 = 0.693 (chance)")
    acc, n = m.get("eval_accuracy"), m.get("eval_pairs") or 0
    if acc is not None and n and abs(acc - 0.5) <= 1.96 * math.sqrt(0.25 / n):
        why.append(
            f"its held-out pairwise accuracy {100 * acc:.1f}% on {n} pairs is within noise of 50% "
            f"(+-{196 * math.sqrt(0.25 / n):.1f} points)"
        )
    if not why:
        return None
    kind = m.get("loss_type")
    tries = (
        ([] if kind in ("both", "verifier") else ["loss: both"])
        + ["more epochs", "another initial model"]
        + ([] if kind == "verifier" else ["head: verifier"])
    )
    return (
        f"Warning: reward model {name} has not learned: " + "; ".join(why) + ". Its scores are close to "
        f"noise, and RL against it optimises noise (try {', '.join(tries[:-1])} or {tries[-1]})."
    )


# ----------------------------------------------------------------------------- sentences
def verdict(c: dict) -> str:
    """'better' / 'worse' / 'no detectable difference', by McNemar p and the bootstrap CI."""
    lo, hi = c["ci95"]
    if c["p_mcnemar"] < ALPHA and lo > 0:
        return "better"
    if c["p_mcnemar"] < ALPHA and hi < 0:
        return "worse"
    return "no detectable difference"


def sentence(c: dict) -> str:
    """'RL student (...) vs SFT student: +2.1 points, 95% CI [0.4, 3.8], p = 0.02, n = 500: A is better.'"""
    lo, hi = c["ci95"]
    p = c["p_mcnemar"]
    head = (
        f"{c['label']}: {100 * c['diff']:+.1f} points, 95% CI [{100 * lo:.1f}, {100 * hi:.1f}], "
        f"McNemar p = {p:.2g}, n = {c['n']}"
    )
    v = verdict(c)
    first = c["label"].split(" vs ")[0]
    return head + (
        f": the {first} is {v}."
        if v != "no detectable difference"
        else ": no detectable difference (the CI includes 0 or p >= 0.05)."
    )


def ladder(comparisons: list[dict], spec: dict) -> dict:
    """Each RL rung against the SFT student it started from, and where the gain is lost.

    Rungs, strongest signal first: gold (oracle), majority (the pseudo-labels themselves),
    model (the learned reward model: the paper's method). A rung that does not beat
    SFT while the one above it does locates the loss.
    """
    rungs = {}
    for c in comparisons:
        if c.get("highlight") and c["a_role"] == "rl" and c["b_role"] == "sft":
            reward = reward_of(spec, c["a_model"])
            if reward and reward not in rungs:
                rungs[reward] = {
                    "stage": c["a"],
                    "diff": c["diff"],
                    "ci95": c["ci95"],
                    "p": c["p_mcnemar"],
                    "n": c["n"],
                    "verdict": verdict(c),
                }
    return {"rungs": rungs, "finding": finding(rungs)}


def finding(rungs: dict) -> str | None:
    """The ladder's verdict in words: the first rung (strongest signal first) that does not beat SFT."""
    if not rungs:
        return None
    order = [k for k in LADDER if k in rungs]
    helps = {k: rungs[k]["verdict"] == "better" for k in order}
    failing = next((k for k in order if not helps[k]), None)
    passed = order[: order.index(failing)] if failing else order
    if failing is None:
        return (
            "RL with the learned reward model beats SFT: distilled rewards help, as the paper claims."
            if "model" in helps
            else "Every rung that ran beats SFT; the learned reward model's rung did not run."
        )
    if failing == "gold":
        return (
            "RL does not beat SFT even with the gold (oracle) reward: at this setting the limit is RL itself, "
            "not the pseudo-labels or the reward model."
        )
    if failing == "majority":
        return (
            "RL gains with the gold reward but not with the majority-vote pseudo-labels: the gain is lost in "
            "the labels."
            if passed
            else "RL with the majority-vote reward does not beat SFT (no gold rung ran "
            "to tell whether RL itself is the limit)."
        )
    if "majority" in passed:
        return (
            "RL gains with the majority-vote pseudo-labels but not with the learned reward model: the gain is "
            "lost in reward-model training."
        )
    if passed:
        return (
            "RL gains with the gold reward but not with the learned reward model (no majority rung ran to "
            "tell the labels from reward-model training)."
        )
    return "RL with the learned reward model does not beat SFT; no gold or majority rung ran to locate the loss."
