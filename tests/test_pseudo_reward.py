"""pseudo_reward on hand-written responses files: votes, drops, labels, pairs, determinism, no gold."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from runtime import pseudo_reward
from runtime.lib import task
from runtime.lib.answers import extract
from runtime.lib.common import read_jsonl, write_jsonl
from runtime.pseudo_reward import vote

TINY = {"init": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "max_length": 64}}


def spec(students: int = 1, task_spec: dict | None = None, **params) -> dict:
    stages = {"teacher_samples": {"kind": "generate", "model": "m", "max_new_tokens": 16}}
    for i in range(students):
        stages[f"student{i}_samples"] = {"kind": "generate", "model": "m", "max_new_tokens": 16}
    stages["votes"] = {
        "kind": "pseudo_reward",
        "teacher": "teacher_samples",
        "students": [f"student{i}_samples" for i in range(students)],
        **params,
    }
    return {
        "name": "pr",
        "seed": 3,
        "models": {"m": TINY},
        "stages": stages,
        "task": task_spec or {"synthetic": {"gold_size": 0, "dev_size": 0, "distill_size": 6, "test_size": 4}},
    }


def responses(path: str | Path, answers: dict[str, list], texts: dict | None = None, cut: set | None = None) -> None:
    """A responses.jsonl in generate's format; None = a response with no usable answer.

    Texts carry the file name and sample id, so no two responses share a text unless `texts` says so.
    `cut`: the (question id, sample id)s cut off at max_new_tokens; None: rows without the field (older runs).
    """
    rows, tag = [], Path(path).parent.name
    for qid, values in answers.items():
        for k, a in enumerate(values):
            own = f"{tag} says {k} #### {a}" if a is not None else f"{tag} hmm {'x' * k}"
            text = (texts or {}).get((qid, k)) or own
            rows.append(
                {
                    "question_id": qid,
                    "sample_id": k,
                    "temperature": 0.7 if k % 2 else 1.0,
                    "seed": k,
                    "text": text,
                    "answer": extract(text, "gsm8k"),
                    "num_tokens": 9,
                }
                | ({} if cut is None else {"cut_off": (qid, k) in cut})
            )
    write_jsonl(path, rows)


def config(path: Path):
    return yaml.safe_load(path.read_text())


def run(path: Path):
    pseudo_reward.main(["--config", str(path)])
    cfg = config(path)
    out = cfg["outputs"]
    return read_jsonl(out["labels"]), read_jsonl(out["pairs"]), json.loads(Path(out["stats"]).read_text())


def q(i: int) -> str:
    return f"distill-{i:05d}"


def test_cut_off_responses_vote_but_are_neither_labels_nor_pairs_unless_kept(built):
    """A response cut off at max_new_tokens still votes (its answer was read), but is left out of the
    labels and pairs by default; keep_cut_off: true keeps it. The number left out is in stats.json."""
    teacher = {q(0): ["5", "5", "5", "3"], q(1): ["2", "2", "4", "4"]}
    student = {q(0): ["3", "5"], q(1): ["4", "2"]}
    cut_t, cut_s = {(q(0), 1), (q(0), 2), (q(1), 0)}, {(q(0), 0)}
    got = {}
    for keep in (False, True):
        configs = built(spec(min_agreement=0.5, keep_cut_off=keep))
        inputs = config(configs["votes"])["inputs"]
        responses(inputs["teacher_responses"], teacher, cut=cut_t)
        responses(inputs["students_0_responses"], student, cut=cut_s)
        got[keep] = run(configs["votes"])
    labels, pairs, stats = got[False]
    kept = {(r["question_id"], r["role"], r["sample_id"]) for r in labels}
    assert kept == {
        (q(0), "teacher", 0),
        (q(0), "teacher", 3),
        (q(0), "student", 1),
        (q(1), "teacher", 1),
        (q(1), "teacher", 2),
        (q(1), "teacher", 3),
        (q(1), "student", 0),
        (q(1), "student", 1),
    }
    assert {r["pseudo_label"] for r in labels if r["question_id"] == q(0)} == {"5"}  # the cut-off 5s voted
    assert {r["pseudo_label"] for r in labels if r["question_id"] == q(1)} == {
        "2"
    }  # 2/2 tie -> "2", with the cut-off 2
    cut_texts = {
        r["text"]
        for r in read_jsonl(inputs["teacher_responses"]) + read_jsonl(inputs["students_0_responses"])
        if r["cut_off"]
    }
    assert len(cut_texts) == 4 and pairs and not cut_texts & {t for p in pairs for t in (p["chosen"], p["rejected"])}
    assert stats["cut_off"] == {"dropped": 4, "keep_cut_off": False}
    labels, pairs, stats = got[True]
    assert len(labels) == 12 and sum(r["cut_off"] for r in labels) == 4
    assert cut_texts & {t for p in pairs for t in (p["chosen"], p["rejected"])}
    assert stats["cut_off"] == {"dropped": 0, "keep_cut_off": True}


def test_vote_majority_ties_and_none():
    assert vote(["5", "5", "3", None]) == ("5", 0.5)
    assert vote(["8", "7", "8", "7"]) == ("7", 0.5)  # tie: the smallest string
    assert vote(["9", "10"]) == ("10", 0.5)  # strings, not numbers: deterministic
    assert vote([None, None, "4", None]) == ("4", 0.25)  # None never votes but counts in the share
    assert vote([None, None]) == (None, 0.0)


def test_labels_drops_and_stats(built):
    configs = built(spec(min_agreement=0.5))
    inputs = config(configs["votes"])["inputs"]
    responses(
        inputs["teacher_responses"],
        {
            q(0): ["5", "5", "3", None],  # kept, label 5, agreement 0.5
            q(1): ["2", "2", "2", "2"],  # kept, unanimous
            q(2): [None, None, None, None],  # dropped: no answer at all
            q(3): ["1", "2", "3", "4"],  # dropped: agreement 0.25 < 0.5
            q(4): ["8", "7", "8", "7"],  # kept: tie broken to "7"
        },
    )  # q(5) not sampled: not counted
    responses(inputs["students_0_responses"], {q(0): ["5", None], q(1): ["3", "2"], q(3): ["1", "1"], q(4): ["8", "7"]})
    labels, pairs, stats = run(configs["votes"])

    assert [r["question_id"] for r in labels] == [q(0)] * 6 + [q(1)] * 6 + [q(4)] * 6
    first = labels[0]
    assert set(first) == {
        "question_id",
        "source",
        "role",
        "sample_id",
        "temperature",
        "text",
        "answer",
        "cut_off",
        "pseudo_label",
        "agreement",
        "label",
    }
    assert not any(r["cut_off"] for r in labels) and stats["cut_off"] == {"dropped": 0, "keep_cut_off": False}
    by = {(r["question_id"], r["role"], r["sample_id"]): r for r in labels}
    assert [by[(q(0), "teacher", k)]["label"] for k in range(4)] == [1, 1, 0, 0]  # None answer = 0
    assert [by[(q(0), "student", k)]["label"] for k in range(2)] == [1, 0]
    assert by[(q(0), "student", 0)]["source"] == "student0_samples"
    assert by[(q(0), "teacher", 0)]["agreement"] == 0.5 and by[(q(1), "teacher", 0)]["agreement"] == 1.0
    assert {r["pseudo_label"] for r in labels if r["question_id"] == q(4)} == {"7"}
    assert [by[(q(4), "student", k)]["label"] for k in range(2)] == [0, 1]

    qs = stats["questions"]
    assert (qs["total"], qs["kept"], qs["dropped"]) == (5, 3, 2)
    assert qs["dropped_low_agreement"] == [q(3)] and qs["dropped_no_answer"] == [q(2)]
    assert sum(stats["agreement_histogram"]["counts"]) == 5
    assert stats["agreement_histogram"]["counts"][9] == 1 and stats["agreement_histogram"]["counts"][5] == 2
    assert stats["labels"]["teacher_samples"] == {
        "role": "teacher",
        "positive": 8,
        "negative": 4,
        "positive_rate": 8 / 12,
    }
    assert stats["labels"]["student0_samples"]["positive"] == 3
    assert stats["pairs"]["total"] == len(pairs) > 0


def test_pairs_cap_sources_and_no_identical_texts(built):
    configs = built(spec(pairs_per_question=4, min_agreement=0.0))
    inputs = config(configs["votes"])["inputs"]
    same = {(q(2), k): "it is #### 6" for k in range(4)}  # four identical teacher positives
    responses(
        inputs["teacher_responses"],
        {q(0): ["1", "1", "1", "2"], q(1): ["3", "3", "3", "9"], q(2): ["6", "6", "6", "6"]},
        texts=same,
    )
    responses(
        inputs["students_0_responses"],
        {
            q(0): ["1", "1", "7", "8", "9", None],  # 2 pos, 4 neg
            q(1): ["3", "3"],  # no student negative
            q(2): ["5"],
        },
    )
    labels, pairs, _ = run(configs["votes"])
    text = {(r["question_id"], r["text"]): r for r in labels}
    per_q = {i: [p for p in pairs if p["question_id"] == q(i)] for i in range(3)}

    assert len(per_q[0]) == 4  # capped (5 positives x 4 negatives)
    assert all(text[(q(0), p["chosen"])]["label"] == 1 for p in per_q[0])
    assert all(
        text[(q(0), p["rejected"])]["role"] == "student" and text[(q(0), p["rejected"])]["label"] == 0 for p in per_q[0]
    )
    assert {p["chosen_source"] for p in per_q[0]} == {"teacher_samples", "student0_samples"}
    # no student negative: the teacher's wrong sample is the rejected one
    assert per_q[1] and {text[(q(1), p["rejected"])]["answer"] for p in per_q[1]} == {"9"}
    assert {p["rejected_source"] for p in per_q[1]} == {"teacher_samples"}
    # identical positives give one pair, not four
    assert len(per_q[2]) == 1
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    assert len({(p["chosen"], p["rejected"]) for p in pairs}) == len(pairs)
    assert set(pairs[0]) == {"question_id", "chosen", "rejected", "chosen_source", "rejected_source"}


def test_no_pairs_when_cap_is_zero(built):
    configs = built(spec(pairs_per_question=0))
    inputs = config(configs["votes"])["inputs"]
    responses(inputs["teacher_responses"], {q(0): ["1", "1", "2"]})
    responses(inputs["students_0_responses"], {q(0): ["2"]})
    labels, pairs, stats = run(configs["votes"])
    assert len(labels) == 4 and pairs == [] and stats["pairs"]["total"] == 0


def test_byte_identical_reruns_and_seeded_pairs(built, tmp_path):
    configs = built(spec(students=2, pairs_per_question=3, min_agreement=0.3))
    cfg = config(configs["votes"])
    teacher = {q(i): [str(i), str(i), str(i + 1), None, str(i)] for i in range(6)}
    responses(cfg["inputs"]["teacher_responses"], teacher)
    responses(cfg["inputs"]["students_0_responses"], {q(i): [str(i + k % 3) for k in range(5)] for i in range(6)})
    responses(cfg["inputs"]["students_1_responses"], {q(i): [str(i - k % 2) for k in range(4)] for i in range(6)})

    def outputs() -> list[bytes]:
        pseudo_reward.main(["--config", str(configs["votes"])])
        return [Path(cfg["outputs"][k]).read_bytes() for k in ("labels", "pairs", "stats")]

    first, second = outputs(), outputs()
    assert first == second
    assert first[1]  # pairs exist, so the comparison means something
    # the pair sample follows the stage seed (and nothing else changes)
    cfg["seed"] = 4
    configs["votes"].write_text(yaml.safe_dump(cfg))
    third = outputs()
    assert third[0] == first[0] and third[1] != first[1]


def test_gold_answers_cannot_change_labels(built, tmp_path, monkeypatch):
    """Scrambling every distill answer changes nothing, and the gold door is never opened."""
    data = tmp_path / "data"
    data.mkdir()
    rows = [
        {"id": f"d{i}", "question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = {2 * i}. #### {2 * i}"}
        for i in range(6)
    ]
    test_rows = [{"question": "What is 10 plus 10?", "answer": "#### 20"}]  # not a distill question
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test_rows))
    task_spec = {"distill": {"path": str(data / "distill.jsonl")}, "test": {"path": str(data / "test.jsonl")}}

    def labelled(distill_rows) -> list[bytes]:
        (data / "distill.jsonl").write_text("".join(json.dumps(r) + "\n" for r in distill_rows))
        configs = built(spec(task_spec=task_spec, min_agreement=0.5))
        cfg = config(configs["votes"])
        responses(
            cfg["inputs"]["teacher_responses"], {f"d{i}": [str(2 * i), str(2 * i), str(i), None] for i in range(6)}
        )
        responses(cfg["inputs"]["students_0_responses"], {f"d{i}": [str(i), str(2 * i)] for i in range(6)})
        pseudo_reward.main(["--config", str(configs["votes"])])
        return [Path(cfg["outputs"][k]).read_bytes() for k in ("labels", "pairs", "stats")]

    def no_gold(*args, **kwargs):
        raise AssertionError("pseudo_reward opened the gold door")

    monkeypatch.setattr(task, "gold", no_gold)
    honest = labelled(rows)
    scrambled = labelled([{**r, "answer": f"#### {97 - k}"} for k, r in enumerate(rows)])
    assert honest == scrambled
    assert b'"pseudo_label": "2"' in honest[0]  # labels were really written


def test_student_pair_share_sets_how_many_pairs_put_a_student_positive_first(built):
    """One question, 3 teacher and 4 student positives, 4 student negatives, cap 8: the share decides the mix."""
    kinds = {}
    for share in (0.0, 0.25, 0.5, 1.0):
        configs = built(spec(pairs_per_question=8, min_agreement=0.0, student_pair_share=share))
        inputs = config(configs["votes"])["inputs"]
        responses(inputs["teacher_responses"], {q(0): ["1", "1", "1"]})
        responses(inputs["students_0_responses"], {q(0): ["1", "1", "1", "1", "7", "8", "9", "6"]})
        labels, pairs, stats = run(configs["votes"])
        role = {r["text"]: r["role"] for r in labels}
        assert len(pairs) == 8 and all(role[p["rejected"]] == "student" for p in pairs)
        kinds[share] = sum(role[p["chosen"]] == "student" for p in pairs)
        assert stats["pairs"]["student_pair_share"] == share
    # 0.0 asks for no student-chosen pair, but 3 x 4 = 12 teacher pairs... cap 8: all teacher
    assert kinds == {0.0: 0, 0.25: 2, 0.5: 4, 1.0: 8}


def test_a_short_kind_is_filled_by_the_other():
    assert pseudo_reward.split_cap(8, 0.5, teacher=2, student=20) == (2, 6)
    assert pseudo_reward.split_cap(8, 0.5, teacher=20, student=1) == (7, 1)
    assert pseudo_reward.split_cap(8, 1.0, teacher=20, student=0) == (8, 0)
    assert pseudo_reward.split_cap(7, 0.5, teacher=20, student=20) == (4, 3)
