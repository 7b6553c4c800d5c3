"""Sweeps: variants of one spec, the stages they share, and the report across seeds.

The planning tests drive the real CLI on specs/tiny.yaml plus a sweep block (no run);
one slow test runs a shrunk sweep through Snakemake to one report, then adds a
learning rate and checks that only the new variant's stages and the report would rerun.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import REPO

BIN = Path(sys.executable).parent


# The paper's chain in specs/tiny.yaml: the counts below are about sharing, not about the extra rungs and
# baselines tiny.yaml also runs (the reward ladder, logit distillation), so the spec may grow without them changing.
CORE = (
    "teacher",
    "teacher_samples",
    "teacher_votes",
    "student_sft",
    "sft_samples",
    "rewards",
    "rm",
    "student_rl",
    "eval_teacher",
    "eval_student",
    "eval_sft",
    "eval_rl",
    "report",
)


def tiny(**sweep) -> dict:
    """specs/tiny.yaml's core chain (CORE) with a sweep block."""
    spec = yaml.safe_load((REPO / "specs" / "tiny.yaml").read_text())
    spec["stages"] = {sid: st for sid, st in spec["stages"].items() if sid in CORE}
    spec["stages"]["rm"].pop("score", None)
    spec["sweep"] = sweep
    return spec


def distillc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "distillc"), *args, "--root", str(root)], cwd=root, capture_output=True, text=True)


def build(root: Path, spec: dict, name: str = "spec.yaml") -> dict[str, dict]:
    """Build through the CLI; return {stage id: its resolved config}."""
    (root / name).write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = distillc(root, "build", name)
    assert proc.returncode == 0, proc.stderr
    lock = json.loads((root / "build" / spec["name"] / "spec.lock.json").read_text())
    return {
        sid: yaml.safe_load((root / "build" / spec["name"] / "stages" / f"{sid}.yaml").read_text())
        for sid in lock["stages"]
    }


def kinds(configs: dict) -> Counter:
    """Jobs per kind, the bootstrapped teacher (sft on gold) counted apart from the SFT students."""
    return Counter(
        "teacher" if c["kind"] == "sft" and c["params"]["data"] == "gold" else c["kind"] for c in configs.values()
    )


@pytest.mark.slow
def test_seed_by_learning_rate_plans_the_shared_stages_once(tmp_path):
    configs = build(tmp_path, tiny(**{"seed": [0, 1], "student_rl.learning_rate": [1.0e-4, 3.0e-4]}))
    count = kinds(configs)
    assert (count["teacher"], count["sft"], count["reward_model"], count["rl"], count["report"]) == (2, 2, 2, 4, 1)
    rl = configs["student_rl__seed_1__learning_rate_0p0003"]
    assert (rl["params"]["learning_rate"], rl["seed"], rl["spec_seed"]) == (3.0e-4, 1, 1)
    assert rl["upstream"] == {"policy": ["student_sft__seed_1"], "reward_model": ["rm__seed_1"]}
    assert rl["models"]["policy"]["path"] == "runs/tiny/student_sft__seed_1/model"
    assert {c["spec_seed"] for sid, c in configs.items() if sid.startswith("teacher__")} == {0, 1}
    out = distillc(tmp_path, "plan", "spec.yaml").stdout
    assert "sweep: 4 variants (seed [0, 1] x student_rl.learning_rate [0.0001, 0.0003])" in out
    assert [line.split()[:3] for line in out.splitlines() if line.startswith(("  teacher ", "  student_rl "))] == [
        ["teacher", "2", "jobs"],
        ["student_rl", "4", "jobs"],
    ]


def test_a_stage_no_swept_value_reaches_is_the_unswept_stage(tmp_path):
    """Sweeping an rl field leaves every upstream stage byte-identical to the plain spec's: no rerun."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    plain = build(tmp_path / "a", tiny())
    swept = build(tmp_path / "b", tiny(**{"student_rl.learning_rate": [1.0e-4, 3.0e-4]}))
    for sid in ("teacher", "teacher_samples", "student_sft", "rewards", "rm", "eval_sft"):
        assert swept[sid] == plain[sid], sid
    assert sorted(s for s in swept if s.startswith(("student_rl", "eval_rl"))) == [
        "eval_rl__learning_rate_0p0001",
        "eval_rl__learning_rate_0p0003",
        "student_rl__learning_rate_0p0001",
        "student_rl__learning_rate_0p0003",
    ]


def test_zip_walks_lists_together_and_models_can_be_swept(tmp_path):
    configs = build(
        tmp_path,
        tiny(
            **{
                "seed": [0, 1],
                "student_rl.kl_coef": [0.05, 0.1],
                "models.student.init.hidden_size": [32, 48],
                "zip": [["seed", "student_rl.kl_coef"]],
            }
        ),
    )
    rl = sorted(s for s, c in configs.items() if c["kind"] == "rl")
    assert rl == [
        "student_rl__seed_0__kl_coef_0p05__hidden_size_32",
        "student_rl__seed_0__kl_coef_0p05__hidden_size_48",
        "student_rl__seed_1__kl_coef_0p1__hidden_size_32",
        "student_rl__seed_1__kl_coef_0p1__hidden_size_48",
    ]
    assert kinds(configs)["teacher"] == 2  # the student's size does not reach the teacher
    sft = configs["student_sft__seed_1__hidden_size_32"]
    assert sft["models"]["model"]["name"] == "student__hidden_size_32"
    assert sft["models"]["model"]["init"]["hidden_size"] == 32


def test_a_variant_that_breaks_the_spec_is_named(tmp_path):
    spec = tiny(**{"seed": [0, 1], "student_rl.reward_model": ["rm", "teacher_votes"]})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = distillc(tmp_path, "validate", "spec.yaml")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("1 problem in spec")  # the same problem in two variants is said once
    assert '"teacher_votes" is a pseudo_reward stage' in proc.stderr
    assert "(in the variant seed=0, student_rl.reward_model=teacher_votes)" in proc.stderr


def test_the_lock_rebuilds_the_same_sweep(tmp_path):
    spec = tiny(**{"seed": [0, 1], "student_rl.learning_rate": [1.0e-4, 3.0e-4]})
    first = build(tmp_path, spec)
    proc = distillc(tmp_path, "build", "build/tiny/spec.lock.json")
    assert proc.returncode == 0 and ", 0 file(s) changed" in proc.stdout, proc.stdout + proc.stderr
    assert len(first) == 29


# ----------------------------------------------------------------------------- statistics
def test_across_seed_statistics_on_hand_worked_cases():
    from scipy import stats

    from runtime.reporting.stats import mcnemar_exact, stratified_bootstrap, t_interval

    lo, hi = t_interval([0.2, 0.4, 0.6])
    assert lo == pytest.approx(0.4 - stats.t.ppf(0.975, 2) * 0.2 / 3**0.5) and hi == pytest.approx(0.8 - lo)
    assert t_interval([0.5]) == [None, None]
    assert stratified_bootstrap([[1, 1], [1, 1, 1]], 200, 0) == [1.0, 1.0]  # no spread, no width
    lo, hi = stratified_bootstrap([[1, 0, -1, 1], [0, 1, 1, 0]], 2000, 0)
    assert lo < 3 / 8 < hi
    # 0/1 scores: each pair differs by -1, 0 or +1, so the exact sign-flip test is McNemar on the discordant pairs
    assert mcnemar_exact(7, 1) == pytest.approx(2 * sum(stats.binom.pmf(k, 8, 0.5) for k in range(2)))


def fake_eval(stage: str, role: str, correct: list[int]) -> dict:
    return {
        "stage": stage,
        "model": stage,
        "role": role,
        "metrics": {},
        "samples": [{"question_id": f"q{i}", "correct": c} for i, c in enumerate(correct)],
    }


def test_pooled_comparison_pairs_by_seed_and_question():
    from runtime.reporting.seeds import summarize, within_variants

    lock = {
        "spec": {"seed": 0},
        "sweep": {
            "keys": ["seed"],
            "variants": [
                {
                    "values": {"seed": s},
                    "label": f"seed={s}",
                    "stages": {"eval_sft": f"eval_sft__seed_{s}", "eval_rl": f"eval_rl__seed_{s}"},
                }
                for s in (0, 1, 2)
            ],
        },
    }
    correct = {0: ([1, 1, 0, 0], [1, 0, 0, 0]), 1: ([1, 1, 1, 0], [0, 0, 1, 0]), 2: ([0, 1, 0, 0], [0, 1, 0, 0])}
    evals = [
        e
        for s, (rl, sft) in correct.items()
        for e in (fake_eval(f"eval_sft__seed_{s}", "sft", sft), fake_eval(f"eval_rl__seed_{s}", "rl", rl))
    ]
    accuracy = [
        {"stage": e["stage"], "status": "ok", "accuracy": sum(c["correct"] for c in e["samples"]) / 4} for e in evals
    ]
    sw = summarize(lock, evals, accuracy, 500, 0)
    rl_acc = next(r for r in sw["accuracy"] if r["stage"] == "eval_rl")
    assert rl_acc["accuracy"] == [0.5, 0.75, 0.25] and rl_acc["mean"] == pytest.approx(0.5)
    assert [(r["seed"], r["diff"], r["a_only"], r["b_only"]) for r in sw["per_seed"]] == [
        (0, 0.25, 1, 0),
        (1, 0.5, 2, 0),
        (2, 0.0, 0, 0),
    ]
    (pooled,) = sw["pooled"]
    assert (pooled["wins"], pooled["ties"], pooled["pairs"], pooled["diff"]) == (2, 1, 12, 0.25)
    assert pooled["p_sign_flip"] == pytest.approx(0.25)  # 3 of 3 discordant pairs for RL: 2 / 2**3
    assert pooled["sentence"].startswith("RL student > SFT student in 2 of 3 seeds (1 tied), mean +25.0 points")
    pairs = within_variants(
        evals, lock, lambda g: [{"a": g[0]["stage"], "b": e["stage"], "highlight": True} for e in g[1:]]
    )
    assert pairs == [{"a": f"eval_sft__seed_{s}", "b": f"eval_rl__seed_{s}", "highlight": True} for s in (0, 1, 2)]


def test_each_rl_rung_is_pooled_on_its_own():
    """A reward ladder has several evals of the role "rl": each is compared and pooled, under its own label."""
    from runtime.reporting.seeds import summarize

    bases = ("eval_sft", "eval_rl", "eval_rl_gold")
    lock = {
        "spec": {"seed": 0},
        "sweep": {
            "keys": ["seed"],
            "variants": [
                {"values": {"seed": s}, "label": f"seed={s}", "stages": {b: f"{b}__seed_{s}" for b in bases}}
                for s in (0, 1)
            ],
        },
    }
    correct = {"eval_sft": [1, 0, 0, 0], "eval_rl": [0, 0, 0, 0], "eval_rl_gold": [1, 1, 1, 0]}
    labels = {
        "eval_sft": None,
        "eval_rl": "RL student (learned RM)",
        "eval_rl_gold": "RL student (gold reward, oracle)",
    }
    evals = []
    for s in (0, 1):
        for b in bases:
            e = fake_eval(f"{b}__seed_{s}", "sft" if b == "eval_sft" else "rl", correct[b])
            evals.append({**e, "label": labels[b]} if labels[b] else e)
    accuracy = [{"stage": e["stage"], "status": "ok", "accuracy": 0.5} for e in evals]
    sw = summarize(lock, evals, accuracy, 200, 0)
    assert [(r["key"], r["diff"], r["seeds"]) for r in sw["pooled"]] == [
        (["eval_rl", "eval_sft"], -0.25, 2),
        (["eval_rl_gold", "eval_sft"], 0.5, 2),
    ]
    assert [r["sentence"].split(" in ")[0] for r in sw["pooled"]] == [
        "RL student (learned RM) > SFT student",
        "RL student (gold reward, oracle) > SFT student",
    ]
    assert {r["stage"]: r["label"] for r in sw["accuracy"]}["eval_rl_gold"] == "RL student (gold reward, oracle)"


# ----------------------------------------------------------------------------- end to end
def shrunk(spec: dict) -> dict:
    """specs/tiny.yaml cut to seconds per stage: the test checks the plumbing, not the learning."""
    spec["name"] = "tiny_sweep"
    spec["task"]["synthetic"].update(gold_size=200, dev_size=20, distill_size=24, test_size=24)
    st = spec["stages"]
    st["teacher"].update(max_steps=30, eval_every_steps=30)
    st["teacher_samples"]["samples_per_temperature"] = st["sft_samples"]["samples_per_temperature"] = 2
    st["student_sft"]["max_steps"] = 10
    st["rm"]["max_steps"] = 4
    st["student_rl"].update(episodes=32, batch_size=16, ppo_epochs=1)
    del st["eval_student"]
    return spec


def snakemake(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run Snakemake in its own process group: on a timeout its running stage jobs go with it."""
    cmd = [str(BIN / "snakemake"), "--cores", "2", "--quiet", "rules", *args]
    proc = subprocess.Popen(
        cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
def test_a_sweep_runs_to_one_report_and_a_new_value_reruns_only_its_stages(tmp_path):
    shutil.copy(REPO / "Snakefile", tmp_path / "Snakefile")
    spec = shrunk(tiny(**{"seed": [0, 1], "student_rl.learning_rate": [1.0e-4, 3.0e-4]}))
    build(tmp_path, spec)
    proc = snakemake(tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "runs" / "tiny_sweep" / "report"
    sw = json.loads((out / "summary.json").read_text())["sweep"]
    assert len(sw["per_seed"]) == 2 * 2 * 3 and len(sw["pooled"]) == 2 * 3  # settings x seeds x comparisons
    assert {r["stage"] for r in sw["accuracy"]} == {"eval_teacher", "eval_sft", "eval_rl"}
    assert all(len(r["accuracy"]) == 2 and None not in r["accuracy"] for r in sw["accuracy"])
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    answer, rest = md.split("## What the comparisons say")[1].split("## Regime map")
    across = rest.split("## Across seeds and variants")[1]
    for r in sw["pooled"]:  # the page answers with the pooled sentences, and the sweep section says them again
        assert r["sentence"] in answer and r["sentence"] in across, r["sentence"]
    assert md.count("question-seed pairs") == 2 * 6
    assert "## Regime map" in md and len(json.loads((out / "summary.json").read_text())["regime"]) == 2
    assert 'alt="sweep_accuracy" src="data:image/png;base64,' in html
    spec["sweep"]["student_rl.learning_rate"].insert(0, 1.0e-3)  # a new value, at the front of the list
    build(tmp_path, spec)
    dry = snakemake(tmp_path, "-n")
    jobs = set(re.findall(r"^(\S+)\s+1$", dry.stdout, flags=re.M))  # Snakemake's "Job stats" table
    assert jobs == {
        "student_rl__seed_0__learning_rate_0p001",
        "student_rl__seed_1__learning_rate_0p001",
        "eval_rl__seed_0__learning_rate_0p001",
        "eval_rl__seed_1__learning_rate_0p001",
        "report",
        "all",
    }


def test_values_print_readably_in_ids_and_never_collide():
    from compiler.plan.expand import _id_texts, id_value

    assert [id_value(v) for v in (3e-05, 0.0001, 2, "ppo", True, [0.7, 1.0])] == [
        "3em05",
        "0p0001",
        "2",
        "ppo",
        "true",
        "0p7_1",
    ]
    texts = _id_texts({"a.lr": [1e-10, 1.0000001e-10]}, ["a.lr"])["a.lr"]  # both print 1em10
    assert len(set(texts.values())) == 2 and all(t.startswith("h") for t in texts.values())
