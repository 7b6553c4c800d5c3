"""One answer logic: the pipeline (runtime.lib.answers), the lm-eval task (its filters and metric, loaded
by lm-eval from the rendered YAML) and the report read and compare every tricky answer alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from compiler.spec import lm_eval_filters
from runtime.lib import answers
from runtime import report
from runtime.lib import task as taskdata
from runtime.eval import read_task_yaml
from runtime.pseudo_reward import vote as pseudo_reward_vote

# (response, format, the answer it holds, its strict answer, gold target as a data file or the synthetic task spells it)
CASES = [
    ("3 + 997 = 1,000 #### 1,000", "gsm8k", "1000", "1000", "1000"),
    ("It costs $1,200.50 in total.", "gsm8k", "1200.5", None, "1200.5"),
    ("#### $1,200.50", "gsm8k", "1200.5", "1200.5", "1200.50"),
    ("14 / 2 = 7.0 #### 7.0", "gsm8k", "7", "7", "7"),
    ("5 - 8 = -3", "gsm8k", "-3", None, "-3"),
    ("#### +3", "gsm8k", "3", "3", "3"),
    ("#### -3", "gsm8k", "-3", "-3", "3"),  # a sign is part of the answer
    ("The answer is 42.", "gsm8k", "42", None, "42"),
    ("6 * 7 = 42. The answer is 42, I think", "gsm8k", "42", None, "42"),
    ("#### 12 apples 5", "gsm8k", "12", "12", "12"),  # the number right after the marker (lm-eval's strict-match)
    ("12. #### 3.", "gsm8k", "3", "3", "3"),
    ("####5", "gsm8k", "5", "5", "5"),
    ("3 + 4 = 7. ####", "gsm8k", "7", None, "7"),  # a dangling (cut-off) marker: the flexible reading
    ("#### 11\nThe answer is 11.\n#### 11\n#### ", "gsm8k", "11", "11", "11"),  # repeated, then cut off
    ("#### 4\nThe answer is 4.\n#### 6\n#### 2", "gsm8k", "4", "4", "4"),  # the FIRST complete marker
    ("#### Step 1: 5 + 3 = 8.\nThe answer is 8.", "gsm8k", "8", None, "8"),  # a heading, not an answer
    ("The answer is 4.\nThe answer is 6 - 2 = 4.\nThe answer is", "gsm8k", "4", None, "4"),  # the last complete one
    ("The answer is 5.\n#### \n6 more", "gsm8k", "5", None, "5"),  # not the last number: the one the model said
    ("The answer is 9, so she has 9 x 5 = 45 eggs.", "gsm8k", "9", None, "9"),
    ("So the answer is 24 + 24 = 52.", "gsm8k", "52", None, "52"),
    ("Max has 14 coins. The answer is that he has more", "gsm8k", "14", None, "14"),
    ('#### 5\nThe answer is "5".\n#### 6\nThe answer is "6".\n#### 7\nThe answer', "gsm8k", "5", "5", "5"),
    ("I do not know", "gsm8k", None, None, "4"),
    ("", "gsm8k", None, None, "4"),
    ("(B)", "multiple_choice", "B", None, "B"),
    ("The answer is B)", "multiple_choice", "B", None, "B"),
    ("(A) looks wrong #### C", "multiple_choice", "C", "C", "C"),
    ("x #### D.", "multiple_choice", "D", "D", "A"),
    ("#### (B) then #### C", "multiple_choice", "B", "B", "B"),
    ("A B ####", "multiple_choice", "B", None, "A"),
    ("The answer is (C), since D and E are wrong", "multiple_choice", "C", None, "C"),
    ("#### Answer: none of them", "multiple_choice", None, None, "A"),
]


@pytest.mark.parametrize("text,fmt,expected,strict,target", CASES)
def test_the_pipeline_reads_each_answer(text, fmt, expected, strict, target):
    assert answers.extract(text, fmt) == expected
    assert answers.extract_strict(text, fmt) == strict
    assert answers.read(text, fmt).answer == expected
    assert answers.same(answers.extract(text, fmt), target) == (
        expected is not None and expected == answers.normalise(target)
    )


def test_normalise_spells_one_answer_one_way():
    table = {
        "1,000": "1000",
        "$1,200.50": "1200.5",
        "7.0": "7",
        "7.50": "7.5",
        "-3": "-3",
        "+3": "3",
        "-0": "0",
        "0.0": "0",
        "(b)": "B",
        "C)": "C",
        "D.": "D",
        "1000": "1000",
        None: None,
        "": None,
        "[invalid]": None,
        "apples": None,
    }
    assert {k: answers.normalise(k) for k in table} == table


def test_one_vote_rule_everywhere():
    """None and "[invalid]" never vote (but count in the share); ties go to the smallest answer."""
    cases = [
        (["[invalid]", None, "9", "8"], ("8", 0.25)),
        (["1,000", "1000.0", None, None, None], ("1000", 0.4)),
        ([None, "[invalid]"], (None, 0.0)),
        (["10", "9", "9", "10"], ("10", 0.5)),
    ]
    for votes, expected in cases:
        assert answers.vote(votes) == expected
        assert pseudo_reward_vote(votes) == expected  # the pseudo-labels use this very rule


def test_gold_targets_are_spelled_like_answers(tmp_path):
    from compiler.spec.schema import TaskSpec

    rows = [{"question": f"q{i}", "answer": f"work #### {a}"} for i, a in enumerate(["1,000", "7.0", "-3", "12"])]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = TaskSpec.model_validate({"format": "gsm8k", "distill": {"path": str(data)}, "test": {"path": str(data)}})
    assert [r["target"] for r in taskdata.gold(task, "test", 0)] == ["1000", "7", "-3", "12"]


def lm_eval_task(built, fmt: str, targets: list[str]):
    """The rendered local task of a sampled eval stage, loaded by lm-eval itself, over `targets`."""
    from lm_eval.tasks import TaskManager

    spec = {
        "name": "ans",
        "seed": 0,
        "task": {"format": fmt, "synthetic": {"gold_size": 0, "dev_size": 0, "distill_size": 4, "test_size": 4}},
        "models": {"m": {"init": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "max_length": 128}}},
        "stages": {"ev": {"kind": "eval", "model": "m", "max_new_tokens": 8, "samples": 3, "temperature": 1.0}},
    }
    config = yaml.safe_load(built(spec)["ev"].read_text())
    task_file = Path(config["inputs"]["lm_eval_task"])
    questions = Path(read_task_yaml(task_file)["dataset_kwargs"]["data_files"]["test"])
    questions.parent.mkdir(parents=True, exist_ok=True)
    questions.write_text(
        "".join(json.dumps({"question_id": f"q{i}", "prompt": "p", "target": t}) + "\n" for i, t in enumerate(targets))
    )
    manager = TaskManager(include_path=str(task_file.parent), include_defaults=False)
    return manager.load([task_file.stem])["tasks"][task_file.stem]


def scored(task, resps: list[list[str]]) -> list[dict]:
    """{filter: (filtered answer, exact_match)} per doc, through the task's own filters and metric."""
    from lm_eval.api.instance import Instance

    docs = list(task.test_docs())[: len(resps)]
    insts = [
        Instance(request_type="generate_until", doc=d, arguments=("p", {}), idx=0, metadata=("t", i, 3))
        for i, d in enumerate(docs)
    ]
    for inst, r in zip(insts, resps):
        inst.resps = r
    for f in task._filters:
        f.apply(insts)
    return [
        {name: (out, task.process_results(inst.doc, [out])["exact_match"]) for name, out in inst.filtered_resps.items()}
        for inst in insts
    ]


@pytest.mark.parametrize("fmt", ["gsm8k", "multiple_choice"])
def test_lm_eval_and_the_report_agree_with_the_pipeline(built, fmt):
    cases = [c for c in CASES if c[1] == fmt]
    task = lm_eval_task(built, fmt, [target for *_, target in cases])
    # each case alone (all three samples the same response), then every case's text as one question's samples
    got = scored(task, [[text] * 3 for text, *_ in cases])
    for (text, _, expected, strict, target), by_filter in zip(cases, got):
        right, strict_right = float(answers.same(expected, target)), float(answers.same(strict, target))
        assert by_filter == {
            "single": (expected or answers.INVALID, right),
            "majority": (expected or answers.INVALID, right),
            "single" + lm_eval_filters.STRICT_SUFFIX: (strict or answers.INVALID, strict_right),
            "majority" + lm_eval_filters.STRICT_SUFFIX: (strict or answers.INVALID, strict_right),
        }, text
        rows = [{"question_id": "q", "answer": answers.extract(text, fmt)}]
        assert report.vote_accuracy(rows, {"q": answers.normalise(target)})["single"] == right, text
        assert report.same_answer(answers.extract(text, fmt), target) == bool(right)
    mixed = [text for text, *_ in cases]
    target = cases[0][-1]
    top, _ = answers.vote([answers.extract(t, fmt) for t in mixed])
    majority = scored(task, [mixed])[0]["majority"]
    assert majority == (top or answers.INVALID, float(answers.same(top, target)))
    rows = [{"question_id": "q", "answer": answers.extract(t, fmt)} for t in mixed]
    assert report.vote_accuracy(rows, {"q": answers.normalise(target)})["majority"] == majority[1]
