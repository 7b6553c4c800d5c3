"""The planner's wiring: stage order, inputs by role, model references."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from compiler.spec.errors import SpecError
from compiler.plan.load import load_spec_with_positions
from compiler.plan import build_plan
from compiler.spec.stages import STAGE_CLASSES

REPO = Path(__file__).resolve().parent.parent


def plan_of(spec: Path, root: Path):
    parsed, positions = load_spec_with_positions(spec)
    return build_plan(parsed, positions, str(spec), root)


@pytest.fixture
def tiny(tmp_path) -> Path:
    shutil.copy(REPO / "specs" / "tiny.yaml", tmp_path / "tiny.yaml")
    return tmp_path / "tiny.yaml"


def test_jobs_run_in_dependency_order_and_end_in_the_report(tiny, tmp_path):
    plan = plan_of(tiny, tmp_path)
    ids = [j.id for j in plan.jobs]
    assert sorted(ids) == sorted(plan.spec.stages) and ids[-1] == "report"
    for i, job in enumerate(plan.jobs[:-1]):
        assert set(job.deps) <= set(ids[:i]), job.id
    report = plan.jobs[-1]
    assert {u for ids_ in report.config.upstream.values() for u in ids_} == set(ids[:-1])
    assert all(j.benchmark in report.inputs.values() for j in plan.jobs[:-1])


def test_inputs_are_the_upstream_outputs_by_role(tiny, tmp_path):
    plan = plan_of(tiny, tmp_path)
    rl, rewards, sft = plan.job("student_rl"), plan.job("rewards"), plan.job("student_sft")
    assert rl.inputs == {"policy": "runs/tiny/student_sft/model", "reward_model": "runs/tiny/rm/model"}
    assert rl.config.models["policy"].source == "stage" and rl.config.models["policy"].base == "student"
    assert rewards.inputs["teacher_responses"] == "runs/tiny/teacher_samples/responses.jsonl"
    assert rewards.inputs["students_0_responses"] == "runs/tiny/sft_samples/responses.jsonl"
    assert rewards.config.upstream["students"] == ["sft_samples"]
    assert sft.inputs == {
        "data_labels": "runs/tiny/teacher_votes/labels.jsonl",
        "data_pairs": "runs/tiny/teacher_votes/pairs.jsonl",
    }
    assert plan.job("eval_rl").inputs["lm_eval_task"].startswith("build/tiny/lm_eval/eval_rl/")
    for job in plan.jobs:
        assert set(job.outputs) == set(STAGE_CLASSES[job.config.kind].outputs)
        assert all(p.startswith(f"runs/tiny/{job.id}/") for p in job.outputs.values())


def test_a_report_stage_is_added_when_missing(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nmodels: {m: {init: {}}}\nstages:\n  ev: {kind: eval, model: m}\n")
    plan = plan_of(spec, tmp_path)
    assert [(j.id, j.config.kind) for j in plan.jobs] == [("ev", "eval"), ("report", "report")]


def test_model_paths_resolve_against_the_spec_folder(tmp_path, hub_reachable):
    (tmp_path / "weights").mkdir()
    for name in ("config.json", "tokenizer.json"):  # a model folder (an empty one is refused)
        (tmp_path / "weights" / name).write_text("{}")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\nmodels: {local: {path: weights}, hub: {path: org/name, revision: v1}}\n"
        "stages:\n  a: {kind: eval, model: local}\n  b: {kind: eval, model: hub}\n"
    )
    plan = plan_of(spec, tmp_path / "elsewhere")
    assert plan.job("a").config.models["model"].path == str(tmp_path / "weights")
    hub = plan.job("b").config.models["model"]
    assert (hub.path, hub.revision, hub.source) == ("org/name", "v1", "path")


def test_eval_without_test_questions_is_refused(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"question": "1 + 1?"}\n')
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\ntask: {distill: {path: q.jsonl}}\nmodels: {m: {init: {}}}\n"
        "stages:\n  ev: {kind: eval, model: m}\n  hub: {kind: eval, model: m, hub_task: gsm8k}\n"
        "  samples: {kind: generate, model: m, split: test}\n"
    )
    with pytest.raises(SpecError) as err:
        plan_of(spec, tmp_path)
    assert [p.field for p in err.value.problems] == ["stages.ev", "stages.samples.split"]
    assert all("task.test" in p.hint for p in err.value.problems)


# `distillc plan` (what a run would redo, and why) is Snakemake's own dry run: tests/test_run.py.


def test_a_second_round_of_rewards_is_just_more_stages(tmp_path):
    """Iterating the method (resample the RL student, relabel, retrain the RM, RL again) needs no
    special field: the stages chain, and each round's model keeps the base student's lineage."""
    spec = yaml.safe_load((REPO / "specs" / "tiny.yaml").read_text())
    spec["stages"].update(
        {
            "rl_samples": {"kind": "generate", "model": "student_rl", "max_new_tokens": 24},
            "rewards_2": {"kind": "pseudo_reward", "teacher": "teacher_samples", "students": ["rl_samples"]},
            "rm_2": {"kind": "reward_model", "data": "rewards_2", "model": "student_rl"},
            "student_rl_2": {"kind": "rl", "policy": "student_rl", "reward_model": "rm_2", "response_length": 24},
            "eval_rl_2": {"kind": "eval", "model": "student_rl_2", "max_new_tokens": 24},
        }
    )
    (tmp_path / "two_rounds.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    plan = plan_of(tmp_path / "two_rounds.yaml", tmp_path)
    order = [j.id for j in plan.jobs]
    assert (
        order.index("student_rl")
        < order.index("rl_samples")
        < order.index("rewards_2")
        < order.index("rm_2")
        < order.index("student_rl_2")
        < order.index("eval_rl_2")
        < order.index("report")
    )
    job = plan.job("student_rl_2")
    assert job.config.models["policy"].base == "student"
    assert job.inputs == {"policy": "runs/tiny/student_rl/model", "reward_model": "runs/tiny/rm_2/model"}
