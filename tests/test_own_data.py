"""Your own data: `distillc init` starters validate and build, and `fraction` splits one file
deterministically into disjoint parts."""

from __future__ import annotations

import json
import random

import pytest

from compiler import cli
from compiler.cli.init import STARTERS
from runtime.lib import task as taskdata
from runtime.lib.common import load_config

from conftest import build_spec


@pytest.mark.parametrize("starter", sorted(STARTERS))
def test_every_starter_validates_and_builds(starter, tmp_path, monkeypatch, capsys, hub_reachable):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init", starter, "--out", "spec.yaml"]) == 0
    out = capsys.readouterr().out
    assert "next:  distillc build spec.yaml" in out
    assert cli.main(["validate", "spec.yaml"]) == 0
    assert cli.main(["build", "spec.yaml"]) == 0
    assert (tmp_path / "build" / "LATEST").exists()
    assert cli.main(["init", starter, "--out", "spec.yaml"]) == 2, "overwrote a spec without --force"


def test_starter_data_reads_as_its_format(tmp_path, monkeypatch):
    """The example files init writes are rows the runtime accepts, with readable final answers."""
    monkeypatch.chdir(tmp_path)
    for starter in ("gsm8k", "multiple_choice"):
        (tmp_path / starter).mkdir()
        assert cli.main(["init", starter, "--out", f"{starter}/spec.yaml"]) == 0
        configs = build_spec(tmp_path / starter / "spec.yaml", tmp_path)
        cfg = load_config(configs["teacher"], "sft")
        gold, test = taskdata.gold(cfg.task, "gold", 0), taskdata.gold(cfg.task, "test", 0)
        assert len(gold) > 500 and len(test) == 200
        assert all(r["target"] for r in gold + test)


def test_fraction_divides_one_file_into_disjoint_stable_parts(tmp_path):
    rows = [{"question": f"q{i}: what is {i} plus 1?", "answer": f"#### {i + 1}"} for i in range(1000)]
    data = tmp_path / "all.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cuts = {"gold": [0.0, 0.5], "dev": [0.5, 0.6], "distill": [0.6, 0.9], "test": [0.9, 1.0]}
    spec = {
        "name": "cut",
        "task": {n: {"path": str(data), "fraction": f} for n, f in cuts.items()},
        "models": {"m": {"init": {}}},
        "stages": {"g": {"kind": "generate", "model": "m"}},
    }
    cfg = load_config(build_spec(spec, tmp_path)["g"], "generate")
    parts = {n: [r["question"] for r in taskdata.gold(cfg.task, n, 0)] for n in cuts}
    every = [q for qs in parts.values() for q in qs]
    assert sorted(every) == sorted(r["question"] for r in rows), "the parts must cover the file exactly once"
    for name, (lo, hi) in cuts.items():
        assert abs(len(parts[name]) / 1000 - (hi - lo)) < 0.06, (name, len(parts[name]))

    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)  # the cut follows each question, not its line number
    data.write_text("".join(json.dumps(r) + "\n" for r in shuffled))
    again = {n: sorted(r["question"] for r in taskdata.gold(cfg.task, n, 0)) for n in cuts}
    assert again == {n: sorted(qs) for n, qs in parts.items()}


def test_overlapping_fractions_of_one_file_are_refused(tmp_path, capsys):
    (tmp_path / "all.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n')
    (tmp_path / "spec.yaml").write_text(
        "name: leak\ntask:\n  distill: {path: all.jsonl, fraction: [0.0, 0.8]}\n"
        "  test: {path: all.jsonl, fraction: [0.7, 1.0]}\n"
        "models: {m: {init: {}}}\nstages: {g: {kind: generate, model: m}}\n"
    )
    assert cli.main(["validate", str(tmp_path / "spec.yaml")]) == 2
    err = capsys.readouterr().err
    assert "spec.yaml:3:" in err and "overlapping fractions" in err and "[0.0, 0.8]" in err
