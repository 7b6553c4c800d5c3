"""Best-of-k reranking in the eval stage (`rerank: <reward_model stage>`): the spec's rules, the plan's wiring,
the choice itself on hand-made scores, the report's rows, and one real run through the CLI with both heads."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from compiler.plan import build_plan
from compiler.plan.load import load_spec_with_positions
from compiler.spec.lm_eval_filters import RERANK, SINGLE, strict
from conftest import REPO
from runtime.lib import answers, rerank

BIN = Path(sys.executable).parent


# ----------------------------------------------------------------------------- spec and plan
# The refusals (samples < 2, hub_task, an unknown or wrong-kind stage with did-you-mean) are in
# tests/bad_specs/eval_rerank_*.yaml, checked by tests/test_load.py.
def test_the_reward_model_is_an_input_of_the_eval_job(tmp_path):
    """The planner wires the reward model's folder in as the eval's `rerank` input (so Snakemake runs the
    reward model first), and the stage reads it through the checked accessor."""
    spec = yaml.safe_load((REPO / "specs" / "tiny.yaml").read_text())
    spec["stages"]["eval_best"] = {"kind": "eval", "model": "student_sft", "samples": 4, "temperature": 1.0}
    spec["stages"]["eval_best"] |= {"max_new_tokens": 24, "rerank": "rm"}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    parsed, positions = load_spec_with_positions(tmp_path / "tiny.yaml")
    plan = build_plan(parsed, positions, str(tmp_path / "tiny.yaml"), tmp_path)
    job = plan.job("eval_best")
    assert job.inputs["rerank"] == "runs/tiny/rm/model" and job.inputs["model"] == "runs/tiny/student_sft/model"
    assert "rm" in job.deps and job.config.upstream["rerank"] == ["rm"]
    assert job.config.input("rerank") == "runs/tiny/rm/model"
    order = [j.id for j in plan.jobs]
    assert order.index("rm") < order.index("eval_best")
    assert "rerank" not in plan.job("eval_sft").inputs  # an eval without rerank reads no reward model
    # unset, the option is left out of the stage config: its bytes, which decide what Snakemake reruns, stay
    assert job.config.model_dump(mode="json")["params"]["rerank"] == "rm"
    assert "rerank" not in plan.job("eval_sft").config.model_dump(mode="json")["params"]


# ----------------------------------------------------------------------------- the choice
def test_pick_is_the_top_score_and_the_first_of_tied():
    assert rerank.pick([0.1, 0.7, 0.3]) == 1
    assert rerank.pick([-2.0, -1.0, -3.0]) == 1
    assert rerank.pick([0.5, 0.9, 0.9, 0.2]) == 1  # tied top: the first in sample order
    assert rerank.pick([0.4, 0.4, 0.4]) == 0  # all alike: the single sample
    assert rerank.pick([math.nan, 0.2, math.nan]) == 1  # NaN never wins
    with pytest.raises(ValueError):
        rerank.pick([])


def row(target: str, *responses: str) -> dict:
    return {
        "question_id": f"q{target}",
        "target": target,
        "responses": list(responses),
        "answers": [answers.extract(r, "gsm8k") for r in responses],
    }


def test_judge_records_the_pick_and_scores_it_as_lm_eval_would():
    """The kept response decides; the strict twin reads only its first complete "#### N"."""
    flexible_only, strict_right, wrong = "so the answer is 5", "2 + 3 = 5\n#### 5", "#### 6"
    rows = [
        row("5", wrong, flexible_only, strict_right),  # the RM prefers the flexible-only answer
        row("5", wrong, flexible_only, strict_right),  # ... here the strict one
        row("7", "#### 7", "#### 8"),  # tied: the first
        row("7", "#### 8", "#### 7"),  # tied: the first, which is wrong
    ]
    scores = [[0.1, 0.9, 0.5], [0.1, 0.5, 0.9], [1.0, 1.0], [2.0, 2.0]]
    filters = rerank.judge(rows, scores, "gsm8k")
    assert [r[rerank.PICK] for r in rows] == [1, 2, 0, 0]
    assert [r[rerank.CORRECT] for r in rows] == [True, True, True, False]
    assert [r[rerank.SCORES] for r in rows] == scores
    assert filters[RERANK]["accuracy"] == 0.75 and filters[strict(RERANK)]["accuracy"] == 0.5
    # lm-eval's standard error of a mean: the sample deviation (n - 1) over sqrt(n)
    assert filters[RERANK]["stderr"] == pytest.approx(math.sqrt((3 * 0.25**2 + 0.75**2) / 3) / 2)
    with pytest.raises(ValueError):
        rerank.judge([row("5", "#### 5")], [[0.1, 0.2]], "gsm8k")  # a score per response, no more


# ----------------------------------------------------------------------------- the report
def fake_eval(sid: str, picked: list[int], first: list[int]) -> dict:
    samples = [
        {"question_id": f"q{i}", "correct": bool(f), rerank.CORRECT: bool(p)}
        for i, (p, f) in enumerate(zip(picked, first))
    ]
    acc = sum(picked) / len(picked)
    return {
        "stage": sid,
        "model": "sft",
        "role": "sft",
        "label": "SFT student, one sample at T=1",
        "rerank_label": "SFT student, best of 4 by reward model rm",
        "metrics": {"n": len(picked), "accuracy": sum(first) / len(first), "filter": SINGLE}
        | {"metrics": {RERANK: {"accuracy": acc}, SINGLE: {"accuracy": sum(first) / len(first)}}},
        "samples": samples,
    }


def test_report_compares_best_of_k_with_the_single_sample_of_the_same_eval():
    from runtime import report
    from runtime.reporting import page

    picked, first = [1, 1, 1, 0, 1, 0, 1, 1], [1, 0, 0, 0, 1, 0, 1, 0]  # rerank right on 3 more questions
    ev = fake_eval("eval_best", picked, first)
    plain = fake_eval("eval_sft", first, first) | {"rerank_label": None}
    plain["samples"] = [{k: v for k, v in r.items() if k != rerank.CORRECT} for r in plain["samples"]]
    del plain["metrics"]["metrics"][RERANK]
    cs = report.comparisons([ev, plain], {}, 200, 0)
    within = [c for c in cs if "a_filter" in c]
    assert len(within) == 1, cs  # the eval without rerank has no such row
    c = within[0]
    assert (c["a"], c["b"], c["a_filter"], c["b_filter"]) == ("eval_best", "eval_best", RERANK, SINGLE)
    assert (c["n"], c["acc_a"], c["acc_b"], c["a_only"], c["b_only"]) == (8, 0.75, 0.375, 3, 0)
    assert c["p_mcnemar"] == pytest.approx(0.25) and not c["highlight"]
    assert c["label"] == "SFT student, best of 4 by reward model rm vs SFT student, one sample at T=1"
    acc = report.accuracy_row(ev)
    assert acc["rerank"] == 0.75 and acc["rerank_ci95"] == list(report.wilson(6, 8))
    assert report.accuracy_row(plain)["rerank"] is None
    s = {"accuracy": [acc, report.accuracy_row(plain)], "comparisons": cs}
    table = page.accuracy(s)["tables"][0]
    assert table["headers"][8:10] == ["best-of-k by RM %", "best-of-k 95% CI"]
    assert table["rows"][0][8:10] == ["75.0", "[40.9, 92.9]"] and table["rows"][1][8:10] == ["n/a", "n/a"]
    rows = page.paired(s, 200)["tables"][0]["rows"]
    assert ["eval_best (rerank) vs eval_best (single)", "8", "75.0", "37.5", "+37.5"] == rows[-1][1:6]


# ----------------------------------------------------------------------------- a real run
SPEC = """\
name: rr
seed: 0
task: {synthetic: {min_steps: 1, max_steps: 1, max_number: 9, gold_size: 20, dev_size: 0, distill_size: 16,
                   test_size: 24}}
models: {m: {init: {hidden_size: 32, num_layers: 1, num_heads: 2, max_length: 96}}}
stages:
  # a random-init model: its numbers are noise, but a vote over them still makes labels and pairs to train on
  samples: {kind: generate, model: m, temperatures: [1.0], samples_per_temperature: 6, max_new_tokens: 12}
  votes: {kind: pseudo_reward, teacher: samples, students: [samples], min_agreement: 0.0, keep_cut_off: true}
  rm: {kind: reward_model, data: votes, model: m, epochs: 1, batch_size: 16}
  rm_v: {kind: reward_model, data: votes, model: m, head: verifier, epochs: 1, batch_size: 16}
  best: {kind: eval, model: m, samples: 4, temperature: 1.0, max_new_tokens: 12, rerank: rm}
  best_v: {kind: eval, model: m, samples: 4, temperature: 1.0, max_new_tokens: 12, rerank: rm_v, batch_size: 5}
"""


@pytest.fixture(scope="module")
def reranked_run(tmp_path_factory) -> Path:
    """The spec above through `distillc build` and `distillc run` (about 45 s on 2 busy cores)."""
    root = tmp_path_factory.mktemp("rerank")
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    (root / "rr.yaml").write_text(SPEC)
    for cmd in (["build", "rr.yaml"], ["run", "--cores", "2", "--quiet", "rules"]):
        proc = subprocess.run([str(BIN / "distillc"), *cmd], cwd=root, capture_output=True, text=True, timeout=600)
        if proc.returncode:
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in root.glob("runs/rr/logs/*.log"))
            pytest.fail(f"distillc {cmd[0]} failed:\n{proc.stderr[-4000:]}\n{logs}")
    return root


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize(("sid", "head"), [("best", "scalar"), ("best_v", "verifier")])
def test_each_question_keeps_its_top_scored_response(reranked_run, sid, head):
    out = reranked_run / "runs" / "rr" / sid
    m, rows = json.loads((out / "metrics.json").read_text()), read_jsonl(out / "samples.jsonl")
    assert m["rerank"] == {"reward_model": "rm" if head == "scalar" else "rm_v", "head": head, "k": 4}
    assert set(m["metrics"]) == {f + s for f in ("single", "majority", RERANK) for s in ("", "_strict")}
    assert m["filter"] == SINGLE and len(rows) == m["n"] == 24
    for r in rows:
        scores = r[rerank.SCORES]
        assert len(scores) == len(r["responses"]) == 4 and all(math.isfinite(v) for v in scores)
        top = max(scores)
        assert r[rerank.PICK] == scores.index(top)  # the highest score; of tied ones, the first
        kept = answers.extract(r["responses"][r[rerank.PICK]], "gsm8k")
        assert r[rerank.CORRECT] == answers.same(kept, r["target"])
        assert r["correct"] == answers.same(r["answers"][0], r["target"])  # lm-eval's single sample, read alike
    assert len({v for r in rows for v in r[rerank.SCORES]}) > 4  # the scores really tell responses apart
    assert m["metrics"][RERANK]["accuracy"] == pytest.approx(sum(r[rerank.CORRECT] for r in rows) / len(rows))
    kept_strict = [answers.extract_strict(r["responses"][r[rerank.PICK]], "gsm8k") for r in rows]
    assert m["metrics"][strict(RERANK)]["accuracy"] == pytest.approx(
        sum(answers.same(a, r["target"]) for a, r in zip(kept_strict, rows)) / len(rows)
    )
    if head == "verifier":
        assert all(0.0 < v < 1.0 for r in rows for v in r[rerank.SCORES])  # p(Yes)


@pytest.mark.slow
def test_recorded_scores_are_the_reward_models_scores_of_those_responses(reranked_run, monkeypatch):
    """Score the recorded responses again, in process, with the same batch size: the same numbers, response
    by response (the pairing of score and response is right, and scoring is deterministic)."""
    import torch

    from runtime.lib import task as taskdata
    from runtime.lib.common import load_config

    monkeypatch.chdir(reranked_run)
    torch.set_num_threads(1)
    for sid in ("best", "best_v"):
        cfg = load_config(f"build/rr/stages/{sid}.yaml", "eval")
        rows = read_jsonl(Path(cfg.outputs["samples"]))
        prompts = {q["id"]: taskdata.messages(q, cfg.task) for q in taskdata.questions(cfg.task, "test", cfg.spec_seed)}
        again = rerank.score(
            cfg.input("rerank"),
            [prompts[r["question_id"]] for r in rows],
            rows,
            cfg.params.batch_size,
            torch.device("cpu"),
            torch.float32,
        )
        for r, values in zip(rows, again):
            assert values == pytest.approx(r[rerank.SCORES], rel=1e-5, abs=1e-6), sid


@pytest.mark.slow
def test_the_report_shows_best_of_k_beside_the_single_sample(reranked_run):
    summary = json.loads((reranked_run / "runs/rr/report/summary.json").read_text())
    metrics = {s: json.loads((reranked_run / f"runs/rr/{s}/metrics.json").read_text()) for s in ("best", "best_v")}
    acc = {a["stage"]: a for a in summary["accuracy"]}
    for sid, m in metrics.items():
        assert acc[sid]["rerank"] == m["metrics"][RERANK]["accuracy"] and None not in acc[sid]["rerank_ci95"]
    within = {c["a"]: c for c in summary["comparisons"] if c.get("a_filter") == RERANK}
    assert set(within) == {"best", "best_v"}
    for sid, c in within.items():
        assert (c["b"], c["b_filter"], c["n"]) == (sid, SINGLE, 24)
        assert c["acc_a"] == pytest.approx(metrics[sid]["metrics"][RERANK]["accuracy"])
        assert c["acc_b"] == pytest.approx(metrics[sid]["metrics"][SINGLE]["accuracy"])
    md = (reranked_run / "runs/rr/report/report.md").read_text()
    assert "best-of-k by RM %" in md and "| best (rerank) vs best (single) | 24 |" in md
