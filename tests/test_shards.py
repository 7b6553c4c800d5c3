"""`shards: N` on generate and eval (compiler/spec/shards.py): N shard jobs over contiguous ranges of whole
batches and a join that writes the stage's outputs; the joined bytes are the same for any N.

Fast tests compile specs and read what the build says; the slow ones run the stage programs (shard
jobs, then the join, as the rules do) and compare bytes, and `distillc plan` asks Snakemake.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from compiler import cli

from conftest import build_spec, synthetic_task

BIN = Path(sys.executable).parent
TASK = synthetic_task(test_size=24)
TINY = {"init": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 64}}


def spec(generate: dict | None = None, evaluate: dict | None = None, models: dict | None = None, **stages) -> dict:
    """One generate stage (4 batches of 8 distill questions), the pseudo_reward stage reading it, one eval
    (3 batches of 8 test questions); `generate` and `evaluate` add fields to them, `models` models."""
    return {
        "name": "sh",
        "seed": 0,
        "task": TASK,
        "models": {"m": TINY} | (models or {}),
        "stages": {
            "samples": {
                "kind": "generate",
                "model": "m",
                "temperatures": [0.0, 1.0],
                "samples_per_temperature": 2,
                "max_new_tokens": 10,
                "batch_size": 8,
            }
            | (generate or {}),
            "votes": {"kind": "pseudo_reward", "teacher": "samples"},
            "ev": {"kind": "eval", "model": "m", "max_new_tokens": 10, "batch_size": 8} | (evaluate or {}),
        }
        | stages,
    }


def rules(root: Path) -> list[str]:
    return re.findall(r"^rule (\w+):$", (root / "build/sh/workflow.smk").read_text(), flags=re.M)


def config(root: Path, job: str) -> dict:
    return yaml.safe_load((root / f"build/sh/stages/{job}.yaml").read_text())


# ------------------------------------------------------------------ the build
def test_a_sharded_stage_is_shard_jobs_and_a_join(tmp_path):
    build_spec(spec({"shards": 2, "resources": {"cpus": 2, "mem_mb": 3000}}, {"shards": 3}), tmp_path)
    assert rules(tmp_path) == [
        "samples_shard1of2",
        "samples_shard2of2",
        "samples",
        "ev_shard1of3",
        "ev_shard2of3",
        "ev_shard3of3",
        "ev",
        "votes",
        "report",
    ]
    stage = config(tmp_path, "samples")
    for k in (1, 2):
        shard = config(tmp_path, f"samples_shard{k}of2")
        assert shard["shard"] == {"index": k, "count": 2}
        assert shard["id"] == "samples"  # seeds derive from the stage's id: every shard draws the stage's seeds
        assert shard["out_dir"] == f"runs/sh/samples/shards/{k}of2"
        assert shard["outputs"] == {"responses": f"runs/sh/samples/shards/{k}of2/responses.jsonl"}
        assert shard["params"] == stage["params"] and shard["models"] == stage["models"]
    # the join: every shard's outputs and benchmark in, the stage's outputs and benchmark out
    assert "shard" not in stage and stage["params"]["shards"] == 2
    assert stage["inputs"] == {
        "shard_1_responses": "runs/sh/samples/shards/1of2/responses.jsonl",
        "shard_1_benchmark": "runs/sh/benchmarks/samples_shard1of2.tsv",
        "shard_2_responses": "runs/sh/samples/shards/2of2/responses.jsonl",
        "shard_2_benchmark": "runs/sh/benchmarks/samples_shard2of2.tsv",
    }
    assert stage["outputs"] == {
        "responses": "runs/sh/samples/responses.jsonl",
        "benchmark": "runs/sh/benchmarks/samples.tsv",
    }
    assert config(tmp_path, "ev_shard3of3")["outputs"] == {
        "metrics": "runs/sh/ev/shards/3of3/metrics.json",
        "samples": "runs/sh/ev/shards/3of3/samples.jsonl",
    }
    assert config(tmp_path, "ev_shard2of3")["inputs"] == {"lm_eval_task": "build/sh/lm_eval/ev/distillc_sh_ev.yaml"}
    # downstream reads one output, where it always did
    assert config(tmp_path, "votes")["inputs"] == {"teacher_responses": "runs/sh/samples/responses.jsonl"}
    report = config(tmp_path, "report")["inputs"]
    assert report["samples_responses"] == "runs/sh/samples/responses.jsonl"
    assert report["samples_benchmark"] == "runs/sh/benchmarks/samples.tsv"  # written by the join
    assert not any("shard" in key for key in report)
    # each shard asks for the stage's resources; the join for one CPU and no GPU; shards start first
    jobs = json.loads((tmp_path / "build/sh/resources.json").read_text())
    for k in (1, 2):
        shard = jobs[f"samples_shard{k}of2"]
        assert (shard["threads"], shard["resources"]["mem_mb"]) == (2, 3000)
        assert shard["priority"] == jobs["samples"]["priority"] + 1
    assert (jobs["samples"]["threads"], jobs["samples"]["resources"]["gpus"]) == (1, 0)
    workflow = (tmp_path / "build/sh/workflow.smk").read_text()
    join_rule = workflow[workflow.index("rule samples:") : workflow.index("rule ev_shard1of3:")]
    assert 'benchmark="runs/sh/benchmarks/samples.tsv"' in join_rule  # an output of the join
    assert '"runs/sh/benchmarks/samples.join.tsv"' in join_rule  # its own time, apart
    assert (tmp_path / "build/sh/lm_eval/ev/distillc_sh_ev.yaml").exists()  # one task, all shards read it
    assert len(list((tmp_path / "build/sh/lm_eval").rglob("*.yaml"))) == 1


def test_shards_1_builds_what_a_spec_without_shards_builds(tmp_path):
    """Byte for byte: no stage config (nor the lock) says `shards` or `shard` unless a stage is sharded."""
    for name, data in (("unset", spec()), ("one", spec({"shards": 1}, {"shards": 1}))):
        (tmp_path / name).mkdir()
        build_spec(data, tmp_path / name)
    files = sorted(p.relative_to(tmp_path / "unset") for p in (tmp_path / "unset/build").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one/build").rglob("*") if p.is_file())
    for rel in files:
        unset, one = (tmp_path / "unset" / rel).read_text(), (tmp_path / "one" / rel).read_text()
        assert unset == one.replace(str(tmp_path / "one"), str(tmp_path / "unset")), rel
    for path in (tmp_path / "one/build/sh/stages").glob("*.yaml"):
        assert "shard" not in path.read_text(), path.name
    assert '"shards"' not in (tmp_path / "one/build/sh/spec.lock.json").read_text()


def test_a_swept_stage_is_sharded_in_each_variant_with_its_seed(tmp_path):
    build_spec(spec({"shards": 2}) | {"sweep": {"seed": [0, 1]}}, tmp_path)
    for seed in (0, 1):
        stage = config(tmp_path, f"samples__seed_{seed}")
        for k in (1, 2):
            shard = config(tmp_path, f"samples__seed_{seed}_shard{k}of2")
            assert (shard["id"], shard["seed"], shard["spec_seed"]) == (f"samples__seed_{seed}", seed, seed)
            assert shard["shard"] == {"index": k, "count": 2} and shard["task"] == stage["task"]


def validate(tmp_path: Path, capsys, data: dict) -> str:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert cli.main(["validate", str(tmp_path / "spec.yaml"), "--root", str(tmp_path)]) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("generate", "evaluate", "stages", "expected"),
    [
        (  # 32 questions in batches of 8: 4 batches
            {"shards": 5},
            None,
            {},
            "stages.samples.shards: shards: 5, but the stage has only 4 batches (32 questions / batch_size 8): "
            "each shard samples whole batches\n    got: 5\n    hint: lower shards to 4, or batch_size to 6",
        ),
        (  # max_questions counts, not the split
            {"shards": 2, "max_questions": 8},
            None,
            {},
            "shards: 2, but the stage has only 1 batch (8 questions / batch_size 8)",
        ),
        (  # eval batches requests: 24 questions x 2 samples / 16
            None,
            {"shards": 4, "samples": 2, "temperature": 1.0, "batch_size": 16},
            {},
            "stages.ev.shards: shards: 4, but the stage has only 3 batches (48 samples / batch_size 16): each "
            "shard samples whole batches\n    got: 4\n    hint: lower shards to 3, or batch_size to 12",
        ),
        (
            None,
            {"shards": 2, "samples": 3, "temperature": 1.0},
            {},
            "stages.ev: with shards, batch_size (8) must be a multiple of samples (3), so that no question's "
            "samples fall in two shards' batches\n",
        ),
        (
            None,
            {"shards": 2, "samples": 3, "temperature": 1.0},
            {},
            "    hint: set batch_size to 6\n",
        ),
        (
            None,
            {"shards": 2, "hub_task": "gsm8k"},
            {},
            "stages.ev: shards: 2 splits the spec's own test questions into lm-eval batches; a hub task "
            "(lm-eval's own data and prompts) runs as one job\n",
        ),
        (None, {"shards": 2, "hub_task": "gsm8k"}, {}, "    hint: remove shards, or hub_task\n"),
        (
            {"shards": 0},
            None,
            {},
            "stages.samples.shards: Input should be greater than or equal to 1\n    got: 0\n    hint: Run this",
        ),
        (
            {"shards": 2},
            None,
            {"samples_shard2of2": {"kind": "eval", "model": "m"}},
            'stages.samples.shards: shard 2 of "samples" runs as job "samples_shard2of2", which is also a '
            'stage or model id\n    got: 2\n    hint: rename "samples_shard2of2"',
        ),
    ],
)
def test_shards_that_cannot_apply_are_refused(tmp_path, capsys, generate, evaluate, stages, expected):
    err = validate(tmp_path, capsys, spec(generate, evaluate, **stages))
    assert expected in err, err


# ------------------------------------------------------------------ distillc status
def test_status_shows_each_shard_under_its_stage(tmp_path):
    build_spec(spec({"shards": 2}), tmp_path)
    runs = tmp_path / "runs/sh/samples"
    (runs / "shards/1of2").mkdir(parents=True)
    (runs / "shards/1of2/responses.jsonl").write_text("")  # shard 1 finished
    time.sleep(0.01)
    now = time.time()
    (runs / "shards/2of2/progress.json").parent.mkdir(parents=True)
    (runs / "shards/2of2/progress.json").write_text(  # shard 2 runs in this very process
        json.dumps(
            {
                "pid": os.getpid(),
                "host": os.uname().nodename,
                "started": now,
                "updated": now,
                "done": 3,
                "total": 16,
                "unit": "questions",
            }  # fmt: skip
        )
    )
    out = subprocess.run([str(BIN / "distillc"), "status"], cwd=tmp_path, capture_output=True, text=True).stdout
    rows = re.findall(r"│ ([\w ]+/?\d*)\s+│ (\w+)\s+│ (\w+)\s+│ ([^│]*)│", out)
    found = {r[0].strip(): (r[2], r[3].strip()) for r in rows}
    assert found["samples"] == ("running", "1/2 shards done"), out
    assert found["samples shard 1/2"][0] == "done", out
    assert found["samples shard 2/2"] == ("running", "3/16 questions (19%)"), out
    assert found["votes"][0] == "pending" and "1 running" in out and "3 pending" in out, out


# ------------------------------------------------------------------ running the jobs (slow)
def run_job(root: Path, job: str) -> None:
    """A job as its rule runs it (in this process): `python -m runtime.<kind> --config stages/<job>.yaml`. A
    join reads its shards' Snakemake benchmark files: stand-ins are written for the shards run here."""
    import importlib

    path = root / f"build/sh/stages/{job}.yaml"
    cfg = yaml.safe_load(path.read_text())
    importlib.import_module(f"runtime.{cfg['kind']}").main(["--config", str(path), "--threads", "1"])
    if cfg.get("shard"):
        bench = root / f"runs/sh/benchmarks/{job}.tsv"
        bench.parent.mkdir(parents=True, exist_ok=True)
        bench.write_text("s\th:m:s\tmax_rss\tcpu_time\n1.5\t0:00:01\t100.0\t1.25\n")


def run_stage(root: Path, stage: str, count: int) -> None:
    for k in range(1, count + 1) if count > 1 else ():
        run_job(root, f"{stage}_shard{k}of{count}")
    run_job(root, stage)  # the join, or the whole stage


def outputs(root: Path, stage: str) -> dict[str, bytes]:
    cfg = yaml.safe_load((root / f"build/sh/stages/{stage}.yaml").read_text())
    return {name: (root / path).read_bytes() for name, path in cfg["outputs"].items() if name != "benchmark"}


@pytest.mark.slow
def test_generate_joins_to_the_same_bytes_for_1_2_3_shards_and_after_a_crash(tmp_path, monkeypatch):
    from runtime import generate
    from runtime.lib.errors import StageError

    monkeypatch.chdir(tmp_path)
    joined = {}
    for count in (1, 2, 3):
        build_spec(spec({"shards": count}), tmp_path)
        run_stage(tmp_path, "samples", count)
        joined[count] = outputs(tmp_path, "samples")["responses"]
    rows = [json.loads(line) for line in joined[1].decode().splitlines()]
    assert len(rows) == 32 * 3 and len({r["seed"] for r in rows}) == 4 * 2  # 4 batches x 2 temperatures
    assert joined[2] == joined[1] and joined[3] == joined[1]
    stats = json.loads((tmp_path / "runs/sh/samples/generate_stats.json").read_text())
    assert (stats["shards"], stats["questions"], stats["responses"]) == (3, 32, 96)
    assert stats["cut_off"] == sum(r["cut_off"] for r in rows) and stats["no_answer"] == sum(
        r["answer"] is None for r in rows
    )
    bench = (tmp_path / "runs/sh/benchmarks/samples.tsv").read_text().splitlines()
    assert bench == ["s\th:m:s\tmax_rss\tcpu_time", "4.5000\t0:00:04\t100.00\t3.7500"]  # 3 shards: summed, largest

    # shard 2 of 2 dies after its first batch; run again, it resumes, and the join gives the same bytes
    build_spec(spec({"shards": 2}), tmp_path)
    run_job(tmp_path, "samples_shard1of2")
    real_append, calls = generate.append_rows, []

    def crash_on_second(path, new_rows):
        calls.append(len(new_rows))
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_append(path, new_rows)

    monkeypatch.setattr(generate, "append_rows", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_job(tmp_path, "samples_shard2of2")
    monkeypatch.setattr(generate, "append_rows", real_append)
    run_job(tmp_path, "samples_shard2of2")
    assert (
        json.loads((tmp_path / "runs/sh/samples/shards/2of2/generate_stats.json").read_text())["resumed_questions"] == 8
    )  # its first batch, kept from the killed run
    run_job(tmp_path, "samples")
    assert outputs(tmp_path, "samples")["responses"] == joined[1]

    # shard files that do not hold the stage's questions in order are refused, not joined
    first, second = (tmp_path / f"runs/sh/samples/shards/{k}of2/responses.jsonl" for k in (1, 2))
    first_text = first.read_text()
    first.write_text(second.read_text())
    second.write_text(first_text)
    with pytest.raises(StageError, match="distill-00016' is out of place"):
        run_job(tmp_path, "samples")
    assert outputs(tmp_path, "samples")["responses"] == joined[1]  # the joined file is left as it was


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> str:
    """A model folder that answers in varied ways: a random tiny model writes one string for every question
    greedily, which would make equal bytes prove little. 60 steps on gold solutions, ~5 s on 1 thread."""
    import torch

    from compiler.spec.contract import ModelRef
    from compiler.spec.schema import InitModel, TaskSpec
    from runtime.lib import models
    from runtime.lib import task as taskdata

    torch.set_num_threads(1)
    task = TaskSpec.model_validate({"synthetic": TASK["synthetic"] | {"gold_size": 200}})
    ref = ModelRef(name="m", source="init", base="m", init=InitModel(**TINY["init"]))
    model, tok = models.load_causal_lm(ref, task, 0, padding_side="right")
    rows = taskdata.gold(task, "gold", 0)
    texts = [
        tok.apply_chat_template(
            taskdata.messages(r, task) + [{"role": "assistant", "content": r["answer"]}], tokenize=False
        )
        for r in rows
    ]
    enc = tok(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    opt, gen = torch.optim.AdamW(model.parameters(), lr=1e-2), torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randint(len(rows), (32,), generator=gen)
        batch = {"input_ids": enc["input_ids"][idx], "attention_mask": enc["attention_mask"][idx]}
        model(**batch, labels=labels[idx]).loss.backward()
        opt.step()
        opt.zero_grad()
    path = tmp_path_factory.mktemp("trained") / "model"
    models.save(model.eval(), tok, path)
    return str(path)


def eval_runs(tmp_path: Path, monkeypatch, model: str, evaluate: dict, counts: tuple[int, ...]) -> dict:
    """The eval stage's outputs with each number of shards; checks the unsharded run's metrics against
    lm-eval's own aggregates (the joins must compute what one job computes)."""
    from runtime import eval as stage

    monkeypatch.chdir(tmp_path)
    own = []
    real_scores = stage.scores
    monkeypatch.setattr(stage, "scores", lambda results: own.append(real_scores(results)) or own[-1])
    found = {}
    for count in counts:
        evaluate = evaluate | {"shards": count, "model": "t", "max_new_tokens": 24}
        build_spec(spec(evaluate=evaluate, models={"t": {"path": model}}), tmp_path)
        own.clear()
        run_stage(tmp_path, "ev", count)
        found[count] = outputs(tmp_path, "ev")
        if count == 1:
            metric, filters = own[0]
            assert json.loads(found[1]["metrics"])["metrics"] == filters  # lm-eval's numbers, to the bit
    return found


@pytest.mark.slow
def test_greedy_eval_joins_to_the_same_samples_and_metrics_for_1_2_3_shards(tmp_path, monkeypatch, trained):
    found = eval_runs(tmp_path, monkeypatch, trained, {}, (1, 2, 3))
    assert found[2] == found[1] and found[3] == found[1]
    metrics = json.loads(found[1]["metrics"])
    assert metrics["n"] == 24 and set(metrics["metrics"]) == {"greedy", "greedy_strict"}
    assert metrics["generated_tokens"] > 0 and metrics["cut_off_share"] is not None
    assert 0 < metrics["accuracy"] < 1 and metrics["stderr"] > 0  # numbers to agree on, not all zeros
    assert len({r["responses"][0] for r in map(json.loads, found[1]["samples"].decode().splitlines())}) > 3
    shard = json.loads((tmp_path / "runs/sh/ev/shards/2of3/metrics.json").read_text())
    assert shard["n"] == len(shard["shard"]["doc_ids"]) < 24  # a shard's metrics are its questions'


@pytest.mark.slow
def test_sampled_eval_with_a_majority_vote_joins_to_the_same_bytes(tmp_path, monkeypatch, trained):
    found = eval_runs(tmp_path, monkeypatch, trained, {"samples": 2, "temperature": 1.0, "batch_size": 4}, (1, 3))
    assert found[3] == found[1]
    metrics = json.loads(found[1]["metrics"])
    assert set(metrics["metrics"]) == {"single", "single_strict", "majority", "majority_strict"}
    rows = [json.loads(line) for line in found[1]["samples"].decode().splitlines()]
    assert all(len(r["responses"]) == 2 for r in rows)
    assert sum(r["responses"][0] != r["responses"][1] for r in rows) > 12  # sampled: the two usually differ


@pytest.mark.slow
def test_plan_lists_each_shard_job_and_why_it_would_run(tmp_path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec({"shards": 2}, {"shards": 3}), sort_keys=False))
    proc = subprocess.run(
        [str(BIN / "distillc"), "plan", "spec.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  samples "))
    assert lines[at + 1].startswith("    shard 1/2 (samples_shard1of2) ")
    assert lines[at + 2].startswith("    shard 2/2 (samples_shard2of2) ")
    assert (
        "RUN  (Missing output files: benchmarks/samples_shard2of2.tsv, samples/shards/2of2/responses.jsonl)"
        in (lines[at + 2])
    )
    assert "Input files updated by another job: samples_shard1of2, samples_shard2of2" in lines[at]
    assert sum(line.startswith("    shard ") for line in lines) == 5
    assert "note: ev runs as 3 shard jobs, then a join" in lines
    assert "4 of 4 stages would run" in proc.stdout  # stages are counted, not jobs
