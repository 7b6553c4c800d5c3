"""The regime map: a sweep over something other than the seed (e.g. the teacher's strength), read per setting.

The method's premise is that the teacher's majority vote is usually right; the map shows what each rung of
the reward ladder is worth as that premise gets truer. Per setting (the sweep's non-seed values), pooled
over its seeds:
- pseudo-label precision: kept pseudo-labels that equal gold, over every seed's kept questions (the first
  pseudo_reward stage of the spec: the teacher's vote), and their coverage;
- the reward model's within-question AUC against gold on its `score` stage's samples, weighted by each
  seed's number of (right, wrong) pairs;
- every eval's accuracy over all (seed, question) pairs with a Wilson 95% CI (the seeds' questions are
  different draws, so the pooled n is their sum);
- a sentence: which rungs beat the SFT student, and whether any student beats the teacher, from the
  sweep's pooled paired comparisons (stratified bootstrap CI, exact sign-flip p; seeds.py).
A spec whose sweep varies only the seed has no map (one setting).
"""

from __future__ import annotations

from .format import ci, pct, png, pvalue, section, signed, table
from .stats import wilson

ALPHA = 0.05  # "beats": the pooled difference's exact sign-flip p below this, and positive


def summarize(settings: dict[str, list[dict]], sweep: dict, accuracy: list[dict], pseudo: dict, rvg: dict):
    """summary.json's "sweep"/"regime": one row per setting, or None with fewer than two settings.

    settings: seeds.settings_of(lock); sweep: seeds.summarize's output (its pooled comparisons);
    accuracy: the report's accuracy rows; pseudo / rvg: pseudo-label quality and reward-model-vs-gold by stage id.
    """
    if len(settings) < 2:
        return None
    acc_by = {a["stage"]: a for a in accuracy if a.get("status") == "ok"}
    rows = []
    for name, vs in settings.items():
        bases = list(vs[0]["stages"])
        rows.append(
            {
                "setting": name,
                "seeds": [v["values"].get("seed") for v in vs],
                "pseudo_labels": _precision(bases, vs, pseudo),
                "reward_models": _aucs(bases, vs, rvg),
                "accuracy": _pooled_accuracy(bases, vs, acc_by),
                "beats_sft": [],
                "above_teacher": [],
            }
        )
    _verdicts(rows, sweep, accuracy, settings)
    for r in rows:
        r["sentence"] = sentence(r)
    return rows


def _precision(bases: list[str], vs: list[dict], pseudo: dict) -> dict | None:
    """The first pseudo_reward stage with gold-judged labels, pooled over seeds (weighted by kept questions)."""
    for b in bases:
        per = [pseudo.get(v["stages"][b]) or {} for v in vs]
        if not any(p.get("precision") is not None for p in per):
            continue
        judged = [(p["precision"], p["kept"], p.get("total") or 0) for p in per if p.get("precision") is not None]
        kept = sum(k for _, k, _ in judged)
        total = sum(t for _, _, t in judged)
        return {
            "stage": b,
            "precision": sum(x * k for x, k, _ in judged) / kept if kept else None,
            "per_seed": [p.get("precision") for p in per],
            "kept": kept,
            "coverage": kept / total if total else None,
        }
    return None


def _aucs(bases: list[str], vs: list[dict], rvg: dict) -> list[dict]:
    out = []
    for b in bases:
        per = [rvg.get(v["stages"][b]) or {} for v in vs]
        got = [
            (g["within_question_auc"], g.get("auc_pairs") or 0) for g in per if g.get("within_question_auc") is not None
        ]
        if not got:
            continue
        pairs = sum(n for _, n in got)
        out.append(
            {
                "stage": b,
                "auc": sum(a * n for a, n in got) / pairs if pairs else None,
                "per_seed": [g.get("within_question_auc") for g in per],
                "pairs": pairs,
            }
        )
    return out


def _pooled_accuracy(bases: list[str], vs: list[dict], acc_by: dict) -> list[dict]:
    out = []
    for b in bases:
        found = [acc_by.get(v["stages"][b]) for v in vs]
        per = [p for p in found if p and p.get("accuracy") is not None]
        if len(per) < len(vs):  # not an eval, or a seed not run: a pooled number would mix settings unevenly
            continue
        right = sum(round(p["accuracy"] * p["n"]) for p in per)
        n = sum(p["n"] for p in per)
        out.append(
            {
                "stage": b,
                "label": per[0]["label"],
                "role": per[0]["role"],
                "accuracy": right / n if n else None,
                "ci95": list(wilson(right, n)),
                "n": n,
                "per_seed": [p["accuracy"] for p in per],
            }
        )
    return out


def _verdicts(rows: list[dict], sweep: dict, accuracy: list[dict], settings: dict) -> None:
    """Fill beats_sft / above_teacher from the pooled comparisons whose B is the SFT student / the teacher."""
    role_of: dict[str, str | None] = {}
    for vs in settings.values():
        for b, sid in vs[0]["stages"].items():
            role_of.setdefault(b, next((a["role"] for a in accuracy if a["stage"] == sid), None))
    by_setting = {r["setting"]: r for r in rows}
    for c in sweep.get("pooled", []):
        r = by_setting.get(c["setting"])
        if r is None:
            continue
        verdict = {
            "a": c["key"][0],
            "label": c["names"][0],
            "diff": c["diff"],
            "ci95": c["ci95"],
            "p": c["p_sign_flip"],
            "wins": c["wins"],
            "seeds": c["seeds"],
        }
        other = role_of.get(c["key"][1])
        if other == "sft" and role_of.get(c["key"][0]) != "teacher":
            r["beats_sft"].append(verdict)
        elif other == "teacher":
            r["above_teacher"].append(verdict)


def better(v: dict) -> bool:
    return v["diff"] > 0 and v["p"] is not None and v["p"] < ALPHA


def worse(v: dict) -> bool:
    return v["diff"] < 0 and v["p"] is not None and v["p"] < ALPHA


def _said(v: dict) -> str:
    return f"{v['label']} {signed(v['diff'])} points, 95% CI {ci(v['ci95'])}, p = {pvalue(v['p'])}"


def sentence(r: dict) -> str:
    """One sentence per setting: the premise (precision), which rungs beat SFT, whether a student beats the teacher."""
    p = r["pseudo_labels"] or {}
    parts = [f"{r['setting']}: pseudo-labels {pct(p.get('precision'))}% right"]
    for m in r["reward_models"]:
        parts.append(f"{m['stage']} within-question AUC {m['auc']:.3f}")
    head = "; ".join(parts) + "."
    vs = r["beats_sft"]
    win = [v for v in vs if better(v)]
    lose = [v for v in vs if worse(v)]
    flat = [v for v in vs if not better(v) and not worse(v)]
    said = []
    if vs:
        said.append(
            ("Beats the SFT student: " + "; ".join(_said(v) for v in win) + ".")
            if win
            else "No rung beats the SFT student."
        )
        if lose:
            said.append("Worse than the SFT student: " + "; ".join(_said(v) for v in lose) + ".")
        if flat:
            said.append("No clear difference: " + "; ".join(_said(v) for v in flat) + ".")
    above = [v for v in r["above_teacher"] if better(v)]
    if r["above_teacher"]:
        best = max(r["above_teacher"], key=lambda v: v["diff"])
        said.append(
            ("A student surpasses the teacher: " + "; ".join(_said(v) for v in above) + ".")
            if above
            else f"No student surpasses the teacher (closest: {_said(best)})."
        )
    return " ".join([head, *said])


# ----------------------------------------------------------------------------- the page
def page_section(regime: list[dict] | None) -> list[dict]:
    """The "Regime map" section: the table, the plot, a sentence per setting."""
    if not regime:
        return []
    evals = list(dict.fromkeys(a["stage"] for r in regime for a in r["accuracy"]))
    label = {a["stage"]: a["label"] for r in regime for a in r["accuracy"]}
    rms = list(dict.fromkeys(m["stage"] for r in regime for m in r["reward_models"]))
    headers = ["setting", "seeds", "pseudo-label precision % (coverage %)"]
    headers += [f"{m} AUC" for m in rms] + [f"{label[e]} %" for e in evals]
    rows = []
    for r in regime:
        p = r["pseudo_labels"] or {}
        auc = {m["stage"]: m["auc"] for m in r["reward_models"]}
        acc = {a["stage"]: a for a in r["accuracy"]}
        rows.append(
            [r["setting"], len(r["seeds"]), f"{pct(p.get('precision'))} ({pct(p.get('coverage'))})"]
            + [f"{auc[m]:.3f}" if auc.get(m) is not None else "-" for m in rms]
            + [f"{pct(acc[e]['accuracy'])} {ci(acc[e]['ci95'])}" if e in acc else "-" for e in evals]
        )
    notes = [
        "Per setting, pooled over its seeds: the precision of the teacher's majority-vote pseudo-labels against "
        "gold (and the share of questions kept), the reward model's within-question AUC against gold on the SFT "
        "student's held-out samples (weighted by each seed's pairs), and each model's accuracy over every "
        "(seed, question) pair with a Wilson 95% CI. 'Beats' means the pooled paired difference is positive with "
        f"exact sign-flip p < {ALPHA} (the comparisons in 'Across seeds and variants')."
    ] + [r["sentence"] for r in regime]
    return [section("Regime map", notes, [table(headers, rows)], ["regime_map"])]


def plot(regime: list[dict] | None) -> dict[str, str]:
    """Accuracy (pooled, Wilson 95% CI) against pseudo-label precision, one line per model."""
    if not regime or any(not r["pseudo_labels"] or r["pseudo_labels"].get("precision") is None for r in regime):
        return {}
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    evals = list(dict.fromkeys(a["stage"] for r in regime for a in r["accuracy"]))
    for e in evals:
        pts = [(100 * r["pseudo_labels"]["precision"], a) for r in regime for a in r["accuracy"] if a["stage"] == e]
        xs = [x for x, _ in pts]
        ys = [100 * a["accuracy"] for _, a in pts]
        err = [
            [y - 100 * a["ci95"][0] for y, (_, a) in zip(ys, pts)],
            [100 * a["ci95"][1] - y for y, (_, a) in zip(ys, pts)],
        ]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=pts[0][1]["label"])
    ax.set(
        xlabel="pseudo-label precision % (the teacher's majority vote against gold)",
        ylabel="accuracy % (pooled over seeds, 95% CI)",
    )
    fig.suptitle("Regime map: what each rung is worth as the teacher gets stronger")  # over the axes and legend
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return {"regime_map": png(fig)}
