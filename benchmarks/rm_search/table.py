"""Every reward model of a run: its own metrics and the report's judgement against gold (reward_vs_gold)."""

import json, sys
from pathlib import Path

run = Path(sys.argv[1])
summary = (
    json.loads((run / "report" / "summary.json").read_text()) if (run / "report" / "summary.json").exists() else {}
)
gold = summary.get("reward_vs_gold", {})
print(
    "| stage | loss | steps | first->last loss | train pair acc | held-out pair acc (n) | s>s held-out acc | within-q AUC (pairs) | best-of-k | mean sample | pass@k |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|")
for d in sorted(run.glob("rm*")):
    m = json.loads((d / "metrics.json").read_text())
    g = gold.get(d.name) or {}
    ss = (m.get("eval_by_kind") or {}).get("student>student", {})
    f = lambda x: "n/a" if x is None else f"{x:.3f}"
    print(
        f"| {d.name} | {m['loss_type']} | {m['steps']} | {f(m.get('first_loss'))} -> {f(m['loss'])} | {f(m['train_accuracy'])} | "
        f"{f(m['eval_accuracy'])} ({m['eval_pairs']}) | {f(ss.get('accuracy'))} ({ss.get('pairs')}) | {f(g.get('within_question_auc'))} ({g.get('auc_pairs')}) | "
        f"{f(g.get('best_of_k'))} | {f(g.get('mean_sample'))} | {f(g.get('pass_at_k'))} |"
    )
