"""runtime.generate: row format and counts, determinism, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.lib import answers
from runtime.lib import checkpoints
from runtime import generate
from runtime.lib import task
from runtime.lib.common import StageError, load_config, read_jsonl

from conftest import REPO, synthetic_task

pytestmark = pytest.mark.slow  # every test here trains a model, runs lm-eval or Snakemake

TASK = synthetic_task()
TINY = {"init": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 64}}


def spec(seed: int = 0, model: dict = TINY, **params) -> dict:
    stage = {
        "kind": "generate",
        "model": "m",
        "temperatures": [0.0, 0.7, 1.0],
        "samples_per_temperature": 3,
        "max_new_tokens": 12,
        "batch_size": 8,
    } | params
    return {"name": "gen", "seed": seed, "task": TASK, "models": {"m": model}, "stages": {"samples": stage}}


def run(config: Path) -> list[dict]:
    generate.main(["--config", str(config), "--threads", "1"])
    return read_jsonl(load_config(config, "generate").outputs["responses"])


def test_rows_follow_the_format_and_counts(built):
    config = built(spec())["samples"]
    rows = run(config)
    cfg = load_config(config, "generate")
    questions = task.questions(cfg.task, "distill", cfg.spec_seed)
    per_q = 1 + 3 + 3  # greedy gives one sample, each sampled temperature three
    assert len(rows) == len(questions) * per_q
    assert [r["question_id"] for r in rows] == [q["id"] for q in questions for _ in range(per_q)]
    keys = {"question_id", "sample_id", "temperature", "seed", "text", "answer", "num_tokens", "cut_off"}
    for i, r in enumerate(rows):
        assert set(r) == keys
        assert r["sample_id"] == i % per_q
        assert r["temperature"] == [0.0, 0.7, 0.7, 0.7, 1.0, 1.0, 1.0][r["sample_id"]]
        assert isinstance(r["text"], str) and isinstance(r["seed"], int)
        assert r["answer"] == answers.extract(r["text"], "gsm8k")
        assert 1 <= r["num_tokens"] <= 12
        assert r["cut_off"] is False or r["num_tokens"] == 12  # cut off: the whole budget, no stop
    # one seed per (batch of 8 questions, temperature): 4 batches x 3 temperatures
    assert len({r["seed"] for r in rows}) == 12
    assert len({r["text"] for r in rows}) > len(rows) // 4  # sampling, not one repeated string
    stats = json.loads((Path(cfg.out_dir) / "generate_stats.json").read_text())
    assert stats["generated_tokens"] == sum(r["num_tokens"] for r in rows) and stats["tokens_per_s"] > 0
    assert stats["responses"] == len(rows)
    assert stats["cut_off"] == sum(r["cut_off"] for r in rows) > 0  # a random model rarely stops in 12 tokens
    assert stats["no_answer"] == sum(r["answer"] is None for r in rows)
    assert not (Path(cfg.out_dir) / "partial" / generate.PARTIAL).exists()


def test_same_seed_same_rows_other_seed_other_samples(built):
    first = run(built(spec(seed=3))["samples"])
    Path("runs/gen/samples/responses.jsonl").unlink()
    assert run(built(spec(seed=3))["samples"]) == first
    other = run(built(spec(seed=4))["samples"])
    # temperature 0 is greedy: the same text whatever the seed; sampled text changes with it
    assert [r["text"] for r in other if r["temperature"] == 0] == [r["text"] for r in first if r["temperature"] == 0]
    assert [r["text"] for r in other if r["temperature"] > 0] != [r["text"] for r in first if r["temperature"] > 0]


def test_crash_then_rerun_gives_the_uninterrupted_rows(built, monkeypatch):
    """A crash after two batches plus a torn, half-written third one: the rerun fills in exactly the rest."""
    config = built(spec())["samples"]
    reference = run(config)
    Path(load_config(config, "generate").outputs["responses"]).unlink()

    real_append, calls = generate.append_rows, []

    def crash_on_third(path, rows):
        calls.append(len(rows))
        if len(calls) == 3:  # half a batch, ending in a torn line, then the process dies
            with open(path, "a") as fh:
                fh.write("".join(json.dumps(r) + "\n" for r in rows[:10]) + json.dumps(rows[10])[:25])
            raise KeyboardInterrupt
        real_append(path, rows)

    monkeypatch.setattr(generate, "append_rows", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run(config)
    monkeypatch.setattr(generate, "append_rows", real_append)
    partial = Path("runs/gen/samples/partial") / generate.PARTIAL
    assert len(partial.read_text().splitlines()) == 2 * 8 * 7 + 11

    assert run(config) == reference
    stats = json.loads(Path("runs/gen/samples/generate_stats.json").read_text())
    # 16 questions of two whole batches plus the one complete question of the torn batch; that
    # batch is regenerated whole (its seed covers it), and the kept question is not written twice
    assert stats["resumed_questions"] == 17


def test_partial_rows_of_another_config_are_discarded(built):
    config = built(spec())["samples"]
    reference = run(config)
    partial = Path("runs/gen/samples/partial") / generate.PARTIAL
    partial.parent.mkdir()  # a finished run removed it; a killed run of another config left this one
    partial.write_text("".join(json.dumps(r | {"text": "stale"}) + "\n" for r in reference[:14]))
    (partial.parent / checkpoints.STAMP).write_text("an older config")
    assert run(config) == reference


def test_killed_subprocess_resumes_without_loss_or_duplicates(built):
    """A real SIGKILL mid-run (one question per batch, so there are many batches), then a rerun."""
    model = {"init": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 96}}
    config = built(spec(model=model, batch_size=1, max_new_tokens=40, temperatures=[1.0], samples_per_temperature=8))[
        "samples"
    ]
    partial = Path("runs/gen/samples/partial") / generate.PARTIAL
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.generate", "--config", str(config), "--threads", "1"],
        env=env,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not (partial.exists() and len(partial.read_text().splitlines()) >= 16) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    done = len(partial.read_text().splitlines())
    assert 16 <= done < 32 * 8, "the kill came too late to test resume"

    resumed = run(config)
    Path("runs/gen/samples/responses.jsonl").unlink()
    partial.unlink(missing_ok=True)
    uninterrupted = run(config)
    assert resumed == uninterrupted
    assert len({(r["question_id"], r["sample_id"]) for r in resumed}) == len(resumed) == 32 * 8


def test_a_hand_edited_vllm_engine_is_refused_at_start(built):
    """The compiler refuses engine: vllm (tests/bad_specs/vllm_*.yaml); a stage config edited by hand
    to say it stops before loading anything, with a message that says why."""
    config = built(spec())["samples"]
    text = config.read_text()
    assert "engine: hf" in text
    config.write_text(text.replace("engine: hf", "engine: vllm"))
    with pytest.raises(StageError, match="engine: vllm is not available yet in this version"):
        generate.main(["--config", str(config), "--threads", "1"])
    assert not Path(load_config(config, "generate").outputs["responses"]).exists()
