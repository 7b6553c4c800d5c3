"""pseudo_reward: the paper's label-free rewards (majority vote over teacher samples).

For each distillation question the teacher's most common extracted answer is the
pseudo-label; questions where too few teacher samples agree are dropped, since a
weak majority is more often wrong. Every teacher and student response of a kept
question is then labelled 1 (its answer matches the pseudo-label) or 0, and
preference pairs put a positive above a student negative.

Gold answers are never read: only the responses files and `task.questions`
(which strips answers) are used. Pure Python, so it starts fast and its outputs
are byte-identical for identical inputs.
"""

from __future__ import annotations

import random
from collections import Counter
from itertools import chain, zip_longest

from compiler.spec.contract import StageConfig
from compiler.spec.stages import PseudoRewardStage

from .lib import task as taskdata
from .lib.answers import same, vote
from .lib.common import StageError, atomic_write_json, derive_seed, log, read_jsonl, start, write_jsonl

HISTOGRAM_BINS = 10


def load_sources(cfg: StageConfig) -> list[tuple[str, str, list[dict]]]:
    """[(role, source stage id, rows)]: the teacher first, then students in spec order."""
    sources = [("teacher", cfg.upstream["teacher"][0], read_jsonl(cfg.input("teacher", "responses")))]
    for i, sid in enumerate(cfg.upstream.get("students", [])):
        sources.append(("student", sid, read_jsonl(cfg.input("students", "responses", i))))
    return sources


def group_by_question(sources, order: list[str]) -> dict[str, list[dict]]:
    """question id -> labelled-row skeletons, in (source, sample_id) order."""
    known = set(order)
    grouped: dict[str, list[dict]] = {}
    for role, source, rows in sources:
        for r in sorted(rows, key=lambda r: r["sample_id"]):
            if r["question_id"] not in known:
                raise StageError(
                    f"{source}: question {r['question_id']!r} is not in the distill split; "
                    "were the responses made from another task?"
                )
            grouped.setdefault(r["question_id"], []).append(
                {
                    "question_id": r["question_id"],
                    "source": source,
                    "role": role,
                    "sample_id": r["sample_id"],
                    "temperature": r["temperature"],
                    "text": r["text"],
                    "answer": r["answer"],
                    "cut_off": taskdata.is_cut_off(r),
                }
            )
    return grouped


def split_cap(cap: int, share: float, teacher: int, student: int) -> tuple[int, int]:
    """(teacher-chosen, student-chosen) pair counts: floor(share * cap) student-chosen, the rest
    teacher-chosen; when one kind runs short, the other fills the cap."""
    n_student = min(int(share * cap), student)
    n_teacher = min(cap - n_student, teacher)
    return n_teacher, min(cap - n_teacher, student)


def make_pairs(rows: list[dict], cap: int, seed: int, student_share: float = 0.5) -> list[dict]:
    """Up to `cap` (chosen, rejected) pairs for one question's labelled rows.

    Rejected responses are student negatives (the mistakes the student must learn
    to avoid); teacher negatives stand in only when no student response is wrong.
    Chosen are teacher and student positives; `student_share` of the cap goes to
    student+ vs student- pairs (only the answer tells those apart; teacher+ vs
    student- can be told by style), and the two kinds are interleaved.
    """
    positives = [r for r in rows if r["label"] == 1]
    rejected = [r for r in rows if r["label"] == 0 and r["role"] == "student"] or [r for r in rows if r["label"] == 0]
    rng = random.Random(seed)
    by_role: dict[str, list[tuple]] = {"teacher": [], "student": []}
    seen = set()
    for c in positives:
        for r in rejected:
            if c["text"] != r["text"] and (c["text"], r["text"]) not in seen:
                seen.add((c["text"], r["text"]))
                by_role[c["role"]].append((c, r))
    for group in by_role.values():
        rng.shuffle(group)
    n_teacher, n_student = split_cap(cap, student_share, len(by_role["teacher"]), len(by_role["student"]))
    kept = zip_longest(by_role["teacher"][:n_teacher], by_role["student"][:n_student])
    interleaved = [p for p in chain.from_iterable(kept) if p]
    return [
        {
            "question_id": c["question_id"],
            "chosen": c["text"],
            "rejected": r["text"],
            "chosen_source": c["source"],
            "rejected_source": r["source"],
        }
        for c, r in interleaved
    ]


def label_all(cfg: StageConfig, st: PseudoRewardStage):
    """(labels, pairs, stats) for the stage: the whole method, no I/O."""
    order = [q["id"] for q in taskdata.questions(cfg.task, "distill", cfg.spec_seed)]
    sources = load_sources(cfg)
    grouped = group_by_question(sources, order)
    labels: list[dict] = []
    pairs: list[dict] = []
    agreements: list[float] = []
    dropped: list[str] = []
    no_answer: list[str] = []
    cut_off = 0
    for qid in order:
        rows = grouped.get(qid) or []
        teacher = [r["answer"] for r in rows if r["role"] == "teacher"]
        if not teacher:
            continue  # not sampled (e.g. generate's max_questions): not a question of this run
        label, agreement = vote(teacher)  # every teacher answer votes, cut off or not
        agreements.append(agreement)
        if label is None or agreement < st.min_agreement:
            (no_answer if label is None else dropped).append(qid)
            continue
        kept = rows if st.keep_cut_off else [r for r in rows if not r["cut_off"]]
        cut_off += len(rows) - len(kept)  # a ramble cut at max_new_tokens is neither a label nor half a pair
        for r in kept:
            r |= {"pseudo_label": label, "agreement": agreement, "label": int(same(r["answer"], label))}
        labels += kept
        pairs += make_pairs(kept, st.pairs_per_question, derive_seed(cfg.seed, "pairs", qid), st.student_pair_share)
    stats = summarise(st, sources, labels, pairs, agreements, dropped, no_answer)
    stats["cut_off"] = {"dropped": cut_off, "keep_cut_off": st.keep_cut_off}
    return labels, pairs, stats


def summarise(st: PseudoRewardStage, sources, labels, pairs, agreements, dropped, no_answer) -> dict:
    """What the report shows about pseudo-labels: coverage, agreement, balance, pairs."""
    counts = [0] * HISTOGRAM_BINS
    for a in agreements:
        counts[min(int(a * HISTOGRAM_BINS), HISTOGRAM_BINS - 1)] += 1
    balance = {}
    for role, source, _ in sources:
        mine = [r["label"] for r in labels if r["source"] == source]
        balance[source] = {
            "role": role,
            "positive": sum(mine),
            "negative": len(mine) - sum(mine),
            "positive_rate": sum(mine) / len(mine) if mine else None,
        }
    kinds = Counter(f"{p['chosen_source']}>{p['rejected_source']}" for p in pairs)
    return {
        "questions": {
            "total": len(agreements),
            "kept": len(agreements) - len(dropped) - len(no_answer),
            "dropped": len(dropped) + len(no_answer),
            "dropped_low_agreement": dropped,
            "dropped_no_answer": no_answer,
        },
        "min_agreement": st.min_agreement,
        "agreement_histogram": {"edges": [i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1)], "counts": counts},
        "mean_agreement": sum(agreements) / len(agreements) if agreements else None,
        "labels": balance,
        "pairs": {
            "total": len(pairs),
            "by_sources": dict(sorted(kinds.items())),
            "per_question_cap": st.pairs_per_question,
            "student_pair_share": st.student_pair_share,
        },
    }


def main(argv=None) -> None:
    cfg, st, _ = start(argv, "pseudo_reward")
    labels, pairs, stats = label_all(cfg, st)
    q = stats["questions"]
    log(
        f"questions: {q['total']} answered by the teacher, {q['kept']} kept, {q['dropped']} dropped "
        f"(agreement < {st.min_agreement} or no answer); {len(labels)} labelled responses, {len(pairs)} pairs; "
        f"{stats['cut_off']['dropped']} responses cut off at max_new_tokens left out"
    )
    if not labels:
        log("warning: no question kept: lower min_agreement or sample the teacher more")
    write_jsonl(cfg.outputs["labels"], labels)
    write_jsonl(cfg.outputs["pairs"], pairs)
    atomic_write_json(cfg.outputs["stats"], stats)


if __name__ == "__main__":
    from .lib.common import run_stage

    run_stage(main)
