"""The regime map (runtime/reporting/regime.py) and the spec that runs it (specs/regime_map.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runtime.reporting import regime
from runtime.reporting.stats import wilson

REPO = Path(__file__).resolve().parent.parent


def stages(name: str) -> dict:
    return yaml.safe_load((REPO / "specs" / f"{name}.yaml").read_text())["stages"]


def test_the_map_runs_the_demo_ladder():
    """specs/regime_map.yaml is specs/demo_seeds.yaml's pipeline (which is the demo's plus the majority rung)
    without the stages the map does not read, and a higher epoch cap on the teacher: keep them in step."""
    demo, seeds, the_map = stages("demo"), stages("demo_seeds"), stages("regime_map")
    dropped = {"student_sft_all", "eval_sft_all", "eval_teacher_sampled", "eval_student"}
    assert {k: v for k, v in seeds.items() if k not in {"student_rl_majority", "eval_rl_majority"}} == demo
    assert set(the_map) == set(seeds) - dropped
    for sid, st in the_map.items():
        assert st == seeds[sid] or (sid == "teacher" and {**st, "epochs": seeds[sid]["epochs"]} == seeds[sid]), sid
    sweep = yaml.safe_load((REPO / "specs/regime_map.yaml").read_text())["sweep"]
    assert sweep["seed"] == [0, 1, 2] and len(sweep["teacher.stop_at_dev_accuracy"]) >= 2


def variant(setting: float, seed: int) -> dict:
    sfx = f"__s{setting}__{seed}"
    bases = ["votes", "rm", "eval_teacher", "eval_sft", "eval_rl"]
    return {"values": {"seed": seed, "strength": setting}, "stages": {b: b + sfx for b in bases}}


def acc_row(sid: str, role: str, label: str, acc: float, n: int = 100) -> dict:
    return {"stage": sid, "role": role, "label": label, "status": "ok", "accuracy": acc, "n": n}


def pooled_row(setting: str, a: str, b: str, names: list[str], diff: float, p: float) -> dict:
    return {
        "setting": setting,
        "key": [a, b],
        "names": names,
        "diff": diff,
        "ci95": [diff - 0.02, diff + 0.02],
        "p_sign_flip": p,
        "wins": 2,
        "seeds": 2,
    }


@pytest.fixture
def inputs():
    settings = {f"strength={s}": [variant(s, 0), variant(s, 1)] for s in (0.5, 0.9)}
    accuracy, pseudo, rvg = [], {}, {}
    for s, weak in ((0.5, True), (0.9, False)):
        for seed in (0, 1):
            sfx = f"__s{s}__{seed}"
            accuracy += [
                acc_row("eval_teacher" + sfx, "teacher", "Teacher", 0.40 if weak else 0.80),
                acc_row("eval_sft" + sfx, "sft", "SFT student", 0.30 + 0.02 * seed if weak else 0.60),
                acc_row("eval_rl" + sfx, "rl", "RL student", 0.28 if weak else 0.70 + 0.01 * seed),
            ]
            pseudo["votes" + sfx] = {
                "precision": (0.5 if weak else 0.9) + 0.1 * seed,
                "kept": 100 + 100 * seed,
                "total": 400,
            }
            rvg["rm" + sfx] = {"within_question_auc": 0.5 + 0.1 * seed, "auc_pairs": 10 * (1 + seed)}
    sweep = {
        "pooled": [
            pooled_row("strength=0.5", "eval_rl", "eval_sft", ["RL student", "SFT student"], -0.03, 0.2),
            pooled_row("strength=0.5", "eval_rl", "eval_teacher", ["RL student", "Teacher"], -0.11, 0.001),
            pooled_row("strength=0.5", "eval_sft", "eval_teacher", ["SFT student", "Teacher"], -0.09, 0.001),
            pooled_row("strength=0.9", "eval_rl", "eval_sft", ["RL student", "SFT student"], 0.105, 0.001),
            pooled_row("strength=0.9", "eval_rl", "eval_teacher", ["RL student", "Teacher"], -0.095, 0.01),
        ]
    }
    return settings, sweep, accuracy, pseudo, rvg


def test_the_map_pools_each_setting_over_its_seeds(inputs):
    rows = regime.summarize(*inputs)
    assert [r["setting"] for r in rows] == ["strength=0.5", "strength=0.9"]
    weak, strong = rows
    # precision weighted by kept questions: (0.5*100 + 0.6*200) / 300; coverage 300 of 800
    assert weak["pseudo_labels"]["precision"] == pytest.approx((0.5 * 100 + 0.6 * 200) / 300)
    assert weak["pseudo_labels"]["coverage"] == pytest.approx(300 / 800)
    assert weak["pseudo_labels"]["stage"] == "votes" and weak["pseudo_labels"]["per_seed"] == [0.5, pytest.approx(0.6)]
    # AUC weighted by pairs: (0.5*10 + 0.6*20) / 30
    assert [m["stage"] for m in weak["reward_models"]] == ["rm"]
    assert weak["reward_models"][0]["auc"] == pytest.approx((0.5 * 10 + 0.6 * 20) / 30)
    sft = next(a for a in weak["accuracy"] if a["stage"] == "eval_sft")
    assert sft["n"] == 200 and sft["accuracy"] == pytest.approx((30 + 32) / 200)
    assert sft["ci95"] == list(wilson(62, 200))
    assert [a["stage"] for a in strong["accuracy"]] == ["eval_teacher", "eval_sft", "eval_rl"]


def test_the_map_says_which_rung_beats_sft_and_whether_a_student_beats_the_teacher(inputs):
    weak, strong = regime.summarize(*inputs)
    assert [v["a"] for v in weak["beats_sft"]] == ["eval_rl"]  # the teacher is not a rung against SFT
    assert {v["a"] for v in weak["above_teacher"]} == {"eval_rl", "eval_sft"}
    assert "No rung beats the SFT student." in weak["sentence"]
    assert "No clear difference: RL student -3.0 points" in weak["sentence"]
    assert "No student surpasses the teacher (closest: SFT student" in weak["sentence"]
    assert "Beats the SFT student: RL student +10.5 points" in strong["sentence"]
    assert "No student surpasses the teacher (closest: RL student -9.5 points" in strong["sentence"]
    assert strong["sentence"].startswith("strength=0.9: pseudo-labels ")


def test_one_setting_has_no_map(inputs):
    settings, sweep, accuracy, pseudo, rvg = inputs
    one = {"all": settings["strength=0.5"]}
    assert regime.summarize(one, sweep, accuracy, pseudo, rvg) is None
    assert regime.page_section(None) == [] and regime.plot(None) == {}


def test_a_setting_with_a_seed_not_run_pools_no_accuracy(inputs):
    settings, sweep, accuracy, pseudo, rvg = inputs
    accuracy = [a for a in accuracy if a["stage"] != "eval_rl__s0.9__1"]
    strong = regime.summarize(settings, sweep, accuracy, pseudo, rvg)[1]
    assert [a["stage"] for a in strong["accuracy"]] == ["eval_teacher", "eval_sft"]


def test_the_map_section_has_a_row_per_setting_and_a_plot(inputs):
    rows = regime.summarize(*inputs)
    (sec,) = regime.page_section(rows)
    assert sec["title"] == "Regime map" and sec["plots"] == ["regime_map"]
    (tab,) = sec["tables"]
    assert len(tab["rows"]) == 2 and "rm AUC" in tab["headers"] and "RL student %" in tab["headers"]
    assert sec["notes"][1:] == [r["sentence"] for r in rows]
    assert regime.plot(rows)["regime_map"].startswith("data:image/png;base64,")


def test_a_swept_report_answers_with_the_map_and_the_pooled_sentences(inputs):
    """With a sweep the page's first section says the regime map's and the pooled comparisons' sentences,
    not one variant's (an anecdote of one seed)."""
    from runtime.reporting import page

    rows = regime.summarize(*inputs)
    pooled = [{"sentence": "RL student > SFT student in 2 of 2 seeds ..."}]
    s = {
        "sweep": {"pooled": pooled, "variants": ["a", "b", "c", "d"], "keys": ["strength", "seed"]},
        "regime": rows,
        "sentences": ["one variant's sentence"],
    }
    sec = page.in_words(s, [])
    assert sec["title"] == "What the comparisons say"
    assert sec["notes"][:3] == [rows[0]["sentence"], rows[1]["sentence"], pooled[0]["sentence"]]
    assert "one variant's sentence" not in sec["notes"]
