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
from conftest import build_spec

BIN = Path(sys.executable).parent
TASK = {
    "synthetic": {
        "min_steps": 1,
        "max_steps": 1,
        "max_number": 9,
        "gold_size": 40,
        "dev_size": 8,
        "distill_size": 32,
        "test_size": 24,
    }
}
TINY = {"init": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 64}}


def spec(generate: dict | None = None, evaluate: dict | None = None, **stages) -> dict:
    """One generate stage (4 batches of 8 distill questions), the pseudo_reward stage reading it, one eval
    (3 batches of 8 test questions); `generate` and `evaluate` add fields to them."""
    return {
        "name": "sh",
        "seed": 0,
        "task": TASK,
        "models": {"m": TINY},
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
