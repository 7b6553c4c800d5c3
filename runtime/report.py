"""report: the last stage: one self-contained HTML page, a Markdown twin and summary.json.

Everything is computed here, after the fact, from the files the other stages left
(a missing file means the stage was not run or is not in the spec: "not run").
Gold answers are read only here and in eval, to judge the pseudo-labels.
Every section up to Provenance depends only on those files (fixed bootstrap seed,
PNG metadata stripped), so identical inputs give byte-identical tables; the
sections after report_page.ENV_MARKER (run times, git commit, hardware) describe the
environment and may differ between runs.
"""

from __future__ import annotations

import csv
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from compiler.spec.contract import ReportConfig
from compiler.spec.lm_eval_filters import MAJORITY, RERANK, SINGLE, strict
from compiler.spec.stagekind import BENCHMARK
from compiler.spec.stages import ReportStage, all_roles

from .lib import task as taskdata
from .lib.answers import same as same_answer
from .lib.answers import vote
from .lib.common import atomic_write_json, atomic_write_text, derive_seed, log, read_jsonl, start
from .lib.rerank import CORRECT as RERANK_CORRECT
from .reporting import cards as report_cards
from .reporting import cutoff as report_cutoff
from .reporting import method as method
from .reporting import regime
from .reporting import seeds as report_seeds
from .reporting.format import CURVES, NAMES
from .reporting.page import render
from .reporting.stats import mcnemar_exact, paired_bootstrap, wilson

# The roles the stage kinds define (compiler/spec/stages.py): later in the pipeline = higher rank = compared first;
# highlighted pairs in that order, each role's own comparisons in the order its kind lists them.
RANK = {name: role.rank for name, role in all_roles().items()}
HIGHLIGHT = [(r.name, other) for r in sorted(all_roles().values(), key=lambda r: -r.rank) for other in r.compared_with]


# ----------------------------------------------------------------------------- reading
def read(path) -> Any:
    """A JSON/JSONL input if it exists, else None (not run, or not produced by this spec)."""
    if not path or not Path(path).is_file():
        return None
    from .lib.common import read_json

    return read_jsonl(path) if str(path).endswith(".jsonl") else read_json(path)


def benchmark(path) -> dict | None:
    """Snakemake's benchmark tsv -> {wall_s, max_rss_mb, cpu_s} (NA -> None)."""
    if not path or not Path(path).is_file():
        return None
    rows = list(csv.DictReader(Path(path).read_text().splitlines(), delimiter="\t"))

    def num(key):
        try:
            return float(rows[0][key])
        except (IndexError, KeyError, TypeError, ValueError):
            return None

    return {"wall_s": num("s"), "max_rss_mb": num("max_rss"), "cpu_s": num("cpu_time")}


def gold_targets(cfg: ReportConfig, split: str, seed: int | None = None) -> dict[str, str] | None:
    """question id -> gold target, or None when the split has no local answers (never downloads)."""
    src = getattr(cfg.task, split, None)
    if cfg.task.synthetic is None and (src is None or src.path is None):
        return None
    rows = taskdata.gold(cfg.task, split, cfg.spec_seed if seed is None else seed)
    return {r["id"]: r["target"] for r in rows if "target" in r} or None


def question_texts(cfg: ReportConfig, seed: int | None = None) -> dict[str, str]:
    src = cfg.task.test
    if cfg.task.synthetic is None and (src is None or src.path is None):
        return {}
    return {
        r["id"]: r["question"] for r in taskdata.questions(cfg.task, "test", cfg.spec_seed if seed is None else seed)
    }


def stage_model(spec: dict, sid: str) -> str:
    return (spec.get("stages", {}).get(sid) or {}).get("model", "?")


# ----------------------------------------------------------------------------- computing
def collect(cfg: ReportConfig, st: ReportStage, lock: dict) -> dict:
    """Every number the report shows, as plain data (this is summary.json); `lock`: the declared spec lock."""
    spec, up = lock.get("expanded") or lock.get("spec", {}), cfg.upstream  # expanded: a sweep's stages
    role_of = cfg.roles  # the planner's (compiler.spec.stages.report_roles)
    evals = []
    for e in sorted(up.get("eval", []), key=lambda e: RANK.get(role_of.get(stage_model(spec, e)), 4)):  # type: ignore[arg-type]  # pipeline order; an eval names its model
        model = stage_model(spec, e)
        role = role_of.get(model, "other")
        evals.append(
            {
                "stage": e,
                "model": model,
                "role": role,
                "label": method.eval_label(spec, e, model, role, NAMES),
                "rerank_label": method.rerank_label(spec, e, model, role, NAMES),
                "metrics": read(cfg.stage_file(e, "metrics")),
                "samples": read(cfg.stage_file(e, "samples")) or [],
            }
        )

    def seed_of(sid: str) -> int:  # a swept seed gives each variant's stages their own questions
        return report_seeds.stage_seed(lock, sid, cfg.spec_seed)

    def gold(sid: str) -> dict | None:
        return gold_targets(cfg, "distill", seed_of(sid))

    accuracy = [accuracy_row(e) for e in evals]
    pseudo = {p: pseudo_label_quality(cfg, p, gold(p)) for p in up.get("pseudo_reward", [])}
    rvg = {r: reward_vs_gold(cfg, spec, r, seed_of(r)) for r in up.get("reward_model", [])}
    sweep = report_seeds.summarize(lock, evals, accuracy, st.bootstrap_samples, cfg.seed)
    compared = report_seeds.within_variants(
        evals, lock, lambda group: comparisons(group, cfg.lineage, st.bootstrap_samples, cfg.seed)
    )
    return {
        "spec": cfg.spec_name,
        "spec_hash": lock.get("spec_hash"),
        "packages": lock.get("packages", {}),
        "seeds": {
            "spec": cfg.spec_seed,
            "report": cfg.seed,
            "stage_overrides": {s: v["seed"] for s, v in spec.get("stages", {}).items() if v.get("seed") is not None},
        },
        "accuracy": accuracy,
        "comparisons": compared,
        "sentences": [method.sentence(c) for c in compared if c["highlight"]],
        "ladder": method.ladder(compared, spec),
        "sweep": sweep,
        "regime": sweep and regime.summarize(report_seeds.settings_of(lock), sweep, accuracy, pseudo, rvg),
        "voting": voting(cfg, evals, spec, gold),
        "cut_off": report_cutoff.collect(cfg, up),
        "pseudo_labels": pseudo,
        "reward_models": {r: read(cfg.stage_file(r, "metrics")) for r in up.get("reward_model", [])},
        "reward_vs_gold": rvg,
        "curves": curves(cfg),
        "examples": examples(evals, st.examples_per_model, lambda sid: question_texts(cfg, seed_of(sid))),
        "resources": {
            s: benchmark(cfg.stage_file(s, BENCHMARK)) for s in sorted({i for ids in up.values() for i in ids})
        },
        "environment": environment(),
    }


def accuracy_row(e: dict) -> dict:
    m = e["metrics"]
    row = {k: e[k] for k in ("stage", "model", "role", "label")}
    if m is None:
        return row | {"status": "not run"}
    n, acc = m.get("n", 0), m.get("accuracy")
    lo, hi = wilson(round(acc * n), n) if acc is not None else (None, None)
    filters = m.get("metrics", {})
    strict_twin = filters.get(strict(m.get("filter") or "")) or {}  # the first complete "#### N" alone
    best = (filters.get(RERANK) or {}).get("accuracy")  # best-of-k by the eval's reward model (`rerank`)
    return row | {
        "status": "ok",
        "task": m.get("task"),
        "n": n,
        "accuracy": acc,
        "stderr": m.get("stderr"),
        "ci95": [lo, hi],
        "majority": (filters.get(MAJORITY) or {}).get("accuracy"),
        "single": (filters.get(SINGLE) or {}).get("accuracy"),
        "strict": strict_twin.get("accuracy"),
        "rerank": best,
        "rerank_ci95": list(wilson(round(best * n), n)) if best is not None else [None, None],
    }


def comparisons(evals: list[dict], lineage: dict[str, list[str]], samples: int, seed: int) -> list[dict]:
    """Every pair of evals sharing questions; the method's key pairs first (highlighted).
    `lineage`: model name -> [it, what it started from, ..., a model id] (the planner's)."""
    have = [e for e in evals if e["samples"]]
    out = []
    for i, first in enumerate(have):
        for second in have[i + 1 :]:
            later = RANK.get(second["role"], -1) > RANK.get(first["role"], -1)
            a, b = (second, first) if later else (first, second)  # later-stage model first: diff = later - earlier
            ca = {r["question_id"]: int(bool(r["correct"])) for r in a["samples"]}
            cb = {r["question_id"]: int(bool(r["correct"])) for r in b["samples"]}
            shared = sorted(set(ca) & set(cb))
            if not shared:
                continue
            x, y = [ca[q] for q in shared], [cb[q] for q in shared]
            key = (a["role"], b["role"])
            chain_a, chain_b = lineage.get(a["model"], [a["model"]]), lineage.get(b["model"], [b["model"]])
            related = b["model"] in chain_a or chain_a[-1:] == chain_b[-1:]
            hl = key in HIGHLIGHT and (b["role"] == "teacher" or related)
            out.append(
                {
                    "a": a["stage"],
                    "b": b["stage"],
                    "highlight": hl,
                    "a_model": a["model"],
                    "b_model": b["model"],
                    "a_role": a["role"],
                    "b_role": b["role"],
                    "label": f"{a['label']} vs {b['label']}",
                }
                | paired_numbers(x, y, samples, derive_seed(seed, a["stage"], b["stage"]))
            )
    order = {k: i for i, k in enumerate(HIGHLIGHT)}
    by_stage = {e["stage"]: e for e in evals}
    ranked = sorted(
        out, key=lambda c: (not c["highlight"], order.get((by_stage[c["a"]]["role"], by_stage[c["b"]]["role"]), 99))
    )
    return ranked + [c for e in have if (c := reranked(e, samples, seed))]


def paired_numbers(x: list[int], y: list[int], samples: int, seed: int) -> dict:
    """Two 0/1 columns over the same questions: accuracies, difference, its paired bootstrap CI, McNemar."""
    only_a, only_b = sum(p > q for p, q in zip(x, y)), sum(q > p for p, q in zip(x, y))
    lo, hi = paired_bootstrap(x, y, samples, seed)
    return {
        "n": len(x),
        "acc_a": sum(x) / len(x),
        "acc_b": sum(y) / len(y),
        "diff": (sum(x) - sum(y)) / len(x),
        "ci95": [lo, hi],
        "a_only": only_a,
        "b_only": only_b,
        "p_mcnemar": mcnemar_exact(only_a, only_b),
    }


def reranked(e: dict, samples: int, seed: int) -> dict | None:
    """Best-of-k by the eval's reward model vs its single sample, on the same questions (one eval's rows:
    the response the reward model kept vs the first response), or None for an eval without `rerank`.
    A and B are one stage; `a_filter` and `b_filter` say which reading of its samples each side is."""
    rows = [r for r in e["samples"] if RERANK_CORRECT in r]
    if not rows or not e["metrics"]:
        return None
    x, y = [int(bool(r[RERANK_CORRECT])) for r in rows], [int(bool(r["correct"])) for r in rows]
    return {
        "a": e["stage"],
        "b": e["stage"],
        "a_filter": RERANK,
        "b_filter": e["metrics"].get("filter") or SINGLE,
        "highlight": False,
        "a_model": e["model"],
        "b_model": e["model"],
        "a_role": e["role"],
        "b_role": e["role"],
        "label": f"{e.get('rerank_label') or e['label'] + ', best of k by its reward model'} vs {e['label']}",
    } | paired_numbers(x, y, samples, derive_seed(seed, e["stage"], RERANK))


def reward_vs_gold(cfg: ReportConfig, spec: dict, rm: str, seed: int) -> dict | None:
    """The reward model's scores of a model's held-out samples (its `score` stage), judged against gold."""
    score_stage = ((spec.get("stages") or {}).get(rm) or {}).get("score")
    if not score_stage:
        return None
    split = ((spec.get("stages") or {}).get(score_stage) or {}).get("split", "distill")
    rows, gold = read(cfg.stage_file(rm, "scores")), gold_targets(cfg, split, seed)
    if not rows or not gold:
        return None
    return {"scored": score_stage, "split": split} | (method.rm_vs_gold(rows, gold, same_answer) or {})


def voting(cfg: ReportConfig, evals: list[dict], spec: dict, gold) -> dict:
    """Single sample vs majority vote: from sampled evals, and on the distill questions with gold
    (`gold(stage id)`: a swept seed draws other questions)."""
    from_evals = [
        {
            "stage": e["stage"],
            "model": e["model"],
            "n": e["metrics"].get("n"),
            "single": e["metrics"]["metrics"][SINGLE]["accuracy"],
            "majority": e["metrics"]["metrics"][MAJORITY]["accuracy"],
        }
        for e in evals
        if e["metrics"] and {SINGLE, MAJORITY} <= set(e["metrics"].get("metrics", {}))
    ]
    stages = spec.get("stages", {})
    teachers = sorted({(stages.get(p) or {}).get("teacher") for p in cfg.upstream.get("pseudo_reward", [])} - {None})  # type: ignore[type-var]  # None removed
    distill = {}
    for g in teachers:
        rows = read(cfg.stage_file(g, "responses"))  # type: ignore[arg-type]  # None was removed from teachers
        if rows and gold(g):
            distill[g] = vote_accuracy(rows, gold(g))
    return {"evals": from_evals, "distill": distill}


def vote_accuracy(rows: list[dict], gold: dict) -> dict:
    """Per-sample accuracy, majority-vote accuracy (runtime.lib.answers.vote, the pipeline's one vote) and pass@k."""
    by_q: dict[str, list] = {}
    for r in rows:
        if r["question_id"] in gold:
            by_q.setdefault(r["question_id"], []).append(r["answer"])
    single, majority, any_ok = [], [], []
    for q, answers in by_q.items():
        ok = [same_answer(a, gold[q]) for a in answers]
        single += ok
        majority.append(same_answer(vote(answers)[0], gold[q]))
        any_ok.append(any(ok))
    n = len(by_q)
    return {
        "questions": n,
        "samples": len(single),
        "single": sum(single) / max(1, len(single)),
        "majority": sum(majority) / max(1, n),
        "pass_at_k": sum(any_ok) / max(1, n),
    }


def pseudo_label_quality(cfg: ReportConfig, p: str, gold) -> dict:
    """Precision of the pseudo-labels and of the positive labels against gold, and coverage."""
    labels, stats = read(cfg.stage_file(p, "labels")), read(cfg.stage_file(p, "stats")) or {}
    if labels is None:
        return {"status": "not run"}
    kept = {r["question_id"]: r["pseudo_label"] for r in labels}
    total = (stats.get("questions") or {}).get("total")
    out: dict[str, Any] = {
        "status": "ok",
        "kept": len(kept),
        "total": total,
        "coverage": len(kept) / total if total else None,
        "mean_agreement": stats.get("mean_agreement"),
        "gold": gold is not None,
        "by_role": {},
    }
    if gold is None:
        return out
    judged = [q for q in kept if q in gold]
    out["precision"] = sum(same_answer(kept[q], gold[q]) for q in judged) / len(judged) if judged else None
    for role in ("all", "teacher", "student"):
        mine = [r for r in labels if r["question_id"] in gold and role in ("all", r["role"])]
        correct = [r for r in mine if same_answer(r["answer"], gold[r["question_id"]])]
        positive = [r for r in mine if r["label"] == 1]
        if mine:
            out["by_role"][role] = {
                "responses": len(mine),
                "positive_rate": len(positive) / len(mine),
                "positive_precision": sum(same_answer(r["answer"], gold[r["question_id"]]) for r in positive)
                / len(positive)
                if positive
                else None,
                "positive_recall": sum(r["label"] == 1 for r in correct) / len(correct) if correct else None,
            }
    return out


def curves(cfg: ReportConfig) -> dict:
    """Per logged step, what each training stage's kind declares as its curve (loss; rl: reward, KL)."""
    out = {}
    for kind, ids in cfg.upstream.items():
        curve = CURVES.get(kind)
        if curve is None:
            continue
        for s in ids:
            path = cfg.stage_file(s, curve.output)
            rows = read(Path(path) / curve.file if path and curve.file else path)
            out[s] = (
                {
                    "kind": kind,
                    "rows": [
                        {"step": r.get("step", i)} | {k: r.get(k) for k in curve.keys}
                        for i, r in enumerate(rows)
                        if any(k in r for k in curve.keys)
                    ],
                }
                if rows
                else None
            )
    return out


def examples(evals: list[dict], k: int, texts) -> dict:
    """The same first k shared questions for every model, so that answers line up.
    `texts(stage id)`: question id -> text (a swept seed draws other questions)."""
    have = [e for e in evals if e["samples"]]
    shared = sorted(set.intersection(*[{r["question_id"] for r in e["samples"]} for e in have])) if have else []
    out = {}
    for e in have:
        rows = {r["question_id"]: r for r in e["samples"]}
        ids = shared[:k] if len(shared) >= k else sorted(rows)[:k]
        out[e["stage"]] = [
            {
                "question_id": q,
                "question": texts(e["stage"]).get(q, ""),
                "target": rows[q].get("target"),
                "response": (rows[q].get("responses") or [""])[0],
                "correct": bool(rows[q].get("correct")),
            }
            for q in ids
        ]
    return out


def environment() -> dict:
    """Git commit and hardware, cheaply: no torch import (its version comes from metadata)."""

    def cmd(*args):
        try:
            return (
                subprocess.run(
                    args, capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent
                ).stdout.strip()
                or None
            )
        except (OSError, subprocess.SubprocessError):
            return None

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    gpus = cmd("nvidia-smi", "--query-gpu=name", "--format=csv,noheader") if shutil.which("nvidia-smi") else None
    commit = cmd("git", "rev-parse", "HEAD") or "unknown"
    if commit != "unknown" and cmd("git", "status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return {
        "git_commit": commit,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch_version,
        "gpus": gpus.splitlines() if gpus else [],
    }


# ----------------------------------------------------------------------------- CLI
def main(argv=None) -> None:
    cfg, st, _ = start(argv, "report")
    lock = read(cfg.lock_file()) or {}
    summary = collect(cfg, st, lock)
    html, md = render(summary, st.bootstrap_samples)
    atomic_write_json(Path(cfg.out_dir) / "summary.json", summary)  # beside the outputs, for tools and tests
    atomic_write_text(cfg.outputs["md"], md)
    atomic_write_text(cfg.outputs["html"], html)
    report_cards.write(cfg, summary, lock)  # beside the outputs too: model_cards/<stage>/README.md
    ok = [a for a in summary["accuracy"] if a["status"] == "ok"]
    log(
        f"report: {len(ok)}/{len(summary['accuracy'])} evals, {len(summary['comparisons'])} comparisons "
        f"-> {cfg.outputs['html']}"
    )


if __name__ == "__main__":
    from .lib.common import run_stage

    run_stage(main)
