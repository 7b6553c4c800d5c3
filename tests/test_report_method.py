"""The report's reading of the method, on hand-worked numbers: RM vs gold, the ladder, the sentences."""

from __future__ import annotations

import pytest

from compiler.spec.rewards import REWARD_SOURCES
from runtime.reporting import method
from runtime.lib.answers import same as same_answer


def scored(q: str, answers_scores: list[tuple[str, float]]) -> list[dict]:
    return [{"question_id": q, "sample_id": i, "answer": a, "score": s} for i, (a, s) in enumerate(answers_scores)]


def test_rm_vs_gold_on_hand_worked_scores():
    gold = {"q1": "5", "q2": "7", "q3": "1"}
    rows = (
        scored("q1", [("5", 0.9), ("4", 0.1), ("6", 0.5)])  # right one on top: 2 of 2 pairs won
        + scored("q2", [("7", 0.2), ("8", 0.6), ("7", 0.6)])  # pairs (7@.2 vs 8@.6) lost, (7@.6 vs 8@.6) tie
        + scored("q3", [("2", 0.3), ("3", 0.1), ("2", 0.2)])  # no right answer: no pair, best-of-k wrong
        + scored("q9", [("1", 5.0)])
    )  # not in gold: ignored
    g = method.rm_vs_gold(rows, gold, same_answer)
    assert g["questions"] == 3 and g["mixed_questions"] == 2 and g["auc_pairs"] == 4
    assert g["within_question_auc"] == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    # best-of-k: q1 right; q2 tie at 0.6 between sample 1 ("8") and 2 ("7") goes to the lower id: wrong; q3 wrong
    assert g["best_of_k"] == pytest.approx(1 / 3)
    assert g["mean_sample"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert g["pass_at_k"] == pytest.approx(2 / 3) and g["k"] == 3
    assert method.rm_vs_gold(rows, {}, same_answer) is None


def comparison(a_role, reward, diff, ci, p, n=500) -> dict:
    return {
        "a": f"eval_{reward}",
        "b": "eval_sft",
        "a_model": f"rl_{reward}",
        "b_model": "sft",
        "a_role": a_role,
        "b_role": "sft",
        "highlight": True,
        "diff": diff,
        "ci95": ci,
        "p_mcnemar": p,
        "n": n,
        "label": f"RL student ({REWARD_SOURCES[reward].short}) vs SFT student",
    }


SPEC = {
    "stages": {
        "rl_gold": {"kind": "rl", "reward": "gold"},
        "rl_majority": {"kind": "rl", "reward": "majority"},
        "rl_model": {"kind": "rl"},
        "sft": {"kind": "sft"},
    }
}


@pytest.mark.parametrize(
    "verdicts, words",
    [
        ({"gold": 0, "majority": 0, "model": 0}, "limit is RL itself"),
        ({"gold": 1, "majority": 0, "model": 0}, "lost in the labels"),
        ({"gold": 1, "majority": 1, "model": 0}, "lost in reward-model training"),
        ({"gold": 1, "majority": 1, "model": 1}, "distilled rewards help"),
        ({"model": 0}, "no gold or majority rung ran"),
        ({"majority": 0, "model": 1}, "no gold rung ran"),
    ],
)
def test_ladder_locates_the_first_rung_that_fails(verdicts, words):
    better, none = (0.04, [0.01, 0.07], 0.01), (0.004, [-0.02, 0.03], 0.7)
    cs = [comparison("rl", k, *(better if v else none)) for k, v in verdicts.items()]
    lad = method.ladder(cs, SPEC)
    assert set(lad["rungs"]) == set(verdicts)
    assert words in lad["finding"]


def test_sentences_say_better_worse_or_no_difference():
    up = comparison("rl", "majority", 0.021, [0.004, 0.038], 0.02)
    assert method.sentence(up) == (
        "RL student (majority-vote reward) vs SFT student: +2.1 points, 95% CI [0.4, 3.8], "
        "McNemar p = 0.02, n = 500: the RL student (majority-vote reward) is better."
    )
    down = comparison("rl", "model", -0.04, [-0.07, -0.01], 0.02)
    assert method.sentence(down).endswith("is worse.")
    flat = comparison("rl", "gold", 0.02, [-0.01, 0.05], 0.2)
    assert method.sentence(flat).endswith("no detectable difference (the CI includes 0 or p >= 0.05).")
    # a small p with a CI that straddles 0 (the two tests disagree) is not called a difference
    assert method.verdict(comparison("rl", "gold", 0.02, [-0.001, 0.05], 0.04)) == "no detectable difference"


def test_the_data_ablation_is_its_own_role_and_a_key_comparison():
    """SFT on all teacher samples vs SFT on majority-agreeing ones: both from the same base student."""
    from runtime import report

    from compiler.spec.schema import Spec
    from compiler.spec.stages import lineage, report_roles

    spec = {
        "name": "ablation",
        "models": {"base": {"init": {}}, "student": {"init": {}}},
        "stages": {
            "teacher": {"kind": "sft", "model": "base", "data": "gold"},
            "samples": {"kind": "generate", "model": "teacher"},
            "votes": {"kind": "pseudo_reward", "teacher": "samples"},
            "sft": {"kind": "sft", "model": "student", "data": "votes"},
            "sft_all": {"kind": "sft", "model": "student", "data": "samples"},
            "rl": {"kind": "rl", "policy": "sft", "reward": "majority", "votes": "votes", "algorithm": "rloo"},
        },
    }
    stages = Spec.model_validate(spec).stages
    roles = report_roles(stages)  # what the planner writes into the report's config
    assert (roles["sft"], roles["sft_all"], roles["teacher"], roles["rl"], roles["student"]) == (
        "sft",
        "sft_all",
        "teacher",
        "rl",
        "student",
    )
    right = {"sft": [1, 1, 1, 0], "sft_all": [1, 0, 0, 0], "rl": [1, 1, 1, 1]}
    evals = sorted(
        (
            {
                "stage": f"eval_{m}",
                "model": m,
                "role": roles[m],
                "label": method.model_label(spec, m, roles[m], report.NAMES),
                "samples": [{"question_id": str(i), "correct": c} for i, c in enumerate(right[m])],
            }
            for m in right
        ),
        key=lambda e: report.RANK[e["role"]],
    )
    chains = {name: lineage(stages, name) for name in right}
    cs = {(c["a"], c["b"]): c for c in report.comparisons(evals, chains, 200, 0)}
    ablation = cs[("eval_sft", "eval_sft_all")]
    assert ablation["highlight"] and ablation["diff"] == 0.5
    assert ablation["label"] == "SFT student vs SFT student (all teacher samples)"
    assert cs[("eval_rl", "eval_sft")]["label"] == "RL student (majority-vote reward) vs SFT student"
    assert not cs[("eval_rl", "eval_sft_all")]["highlight"]


def test_the_report_warns_in_words_when_a_reward_model_has_not_learned():
    from runtime.reporting import page as report_page

    demo = {"loss_type": "pairwise", "loss": 0.659, "eval_accuracy": 0.537, "eval_pairs": 400}  # the demo's
    learned = {"loss_type": "both", "loss": 0.35, "eval_accuracy": 0.80, "eval_pairs": 400}
    flat = {"loss_type": "both", "loss": 0.30, "eval_accuracy": 0.53, "eval_pairs": 400}  # fits, no generalising
    stuck = {"loss_type": "pairwise", "loss": 0.68, "eval_accuracy": 0.75, "eval_pairs": 400}
    said = method.rm_not_learned("rm", demo)
    assert "0.659" in said and "ln 2" in said and "53.7%" in said and "within noise" in said
    assert "try loss: both, more epochs, another initial model or head: verifier" in said
    assert "try more epochs, another initial model or head: verifier" in method.rm_not_learned("rm", flat)
    assert method.rm_not_learned("rm", learned) is None
    assert "within noise" in method.rm_not_learned("rm", flat) and "ln 2" not in method.rm_not_learned("rm", flat)
    assert "ln 2" in method.rm_not_learned("rm", stuck) and "noise of 50%" not in method.rm_not_learned("rm", stuck)
    # few pairs: 60% on 20 pairs is within noise (+-21.9 points), 60% on 2000 is not
    assert method.rm_not_learned("rm", {**learned, "eval_accuracy": 0.6, "eval_pairs": 20})
    assert method.rm_not_learned("rm", {**learned, "eval_accuracy": 0.6, "eval_pairs": 2000}) is None
    # a verifier's next-token loss is not on the ln 2 scale
    assert method.rm_not_learned("rm", {**learned, "loss_type": "verifier", "loss": 0.69}) is None
    page = report_page.reward_models({"reward_models": {"rm": demo, "rm2": learned}})
    text = str(page)
    assert "reward model rm has not learned" in text and "reward model rm2" not in text
