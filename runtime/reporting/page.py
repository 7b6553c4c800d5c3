"""The report's page: computed numbers -> tables, plots and the two templates.

Tables are built once here, as strings, and both report.html.j2 and report.md.j2
print them: the Markdown can never disagree with the HTML. The page leads with its answer (the
verdicts in words, the key comparisons, the reward ladder, then the sweep across seeds), then the
numbers they rest on (accuracy, every paired comparison, folded in the HTML), then the method's
insides (voting, pseudo-labels, reward models, curves, samples). Plots (matplotlib,
Agg, PNG metadata stripped so identical data give identical bytes) go only into
the HTML, inline as base64, so the page needs no other file and no network.
"""

from __future__ import annotations

from compiler.spec.rewards import LADDER, REWARD_SOURCES

from . import method as method
from .cutoff import page_section as cut_off
from .format import CURVES, NAMES, ci, hbars, label_of, num, pct, png, pvalue, section, signed, table
from .seeds import sweep_plots, sweep_section

ENV_MARKER = "<!-- environment-dependent sections below: they may differ between identical runs -->"
CI_NOTE = "95% CI: Wilson score interval from n and accuracy."
KEY_ROWS_SHOWN = 12  # more key comparisons than this (a sweep: every variant's) are folded; the sweep pools them


# ----------------------------------------------------------------------------- sections
def sections(s: dict, bootstrap_samples: int) -> list[dict]:
    """The page, in order: the answer first; sections with env=True come last, after ENV_MARKER."""
    every_pair = paired(s, bootstrap_samples)
    return [
        in_words(s, key_comparisons(every_pair)),
        *sweep_section(s),
        accuracy(s),
        cut_off(s),
        every_pair,
        voting(s),
        pseudo_labels(s),
        reward_models(s),
        training(s),
        examples(s),
        provenance(s),
        resources(s),
        environment(s),
    ]


def accuracy(s: dict) -> dict:
    # strict-match beside the accuracy only where it differs somewhere (as lm-eval's gsm8k shows both)
    strict = any(a.get("strict") is not None and a["strict"] != a["accuracy"] for a in s["accuracy"])
    best = any(a.get("rerank") is not None for a in s["accuracy"])  # an eval reranks with a reward model
    rows = [
        [a["model"], a["stage"], a.get("label") or NAMES.get(a["role"], a["role"])]
        + (
            [a.get("task") or "", a["n"], pct(a["accuracy"]), ci(a["ci95"]), pct(a["majority"])]
            + ([pct(a.get("rerank")), ci(a.get("rerank_ci95"))] if best else [])
            + ([pct(a.get("strict"))] if strict else [])
            if a["status"] == "ok"
            else ["not run"] * (5 + 2 * best + strict)
        )
        for a in s["accuracy"]
    ]
    notes = [CI_NOTE + " Accuracy in %; majority vote where the eval samples several answers per question."]
    if strict:
        notes.append(
            "Accuracy reads each response's first complete \"#### N\", else its flexible answer (\"the "
            "answer is N\", else the last number); strict-match counts the \"#### N\" alone "
            "(lm-eval's gsm8k strict-match and flexible-extract)."
        )
    if best:
        notes.append(
            "Best-of-k by RM: the accuracy of the one sample per question that the eval's reward model "
            "(`rerank`) scores highest (ties: the first sample); its 95% CI as above."
        )
    headers = ["model", "stage", "role", "task", "n", "accuracy %", "95% CI", "majority-vote %"]
    headers += ["best-of-k by RM %", "best-of-k 95% CI"] if best else []
    return section(
        "Accuracy",
        notes if rows else ["not run: the spec has no eval stage"],
        [table(headers + (["strict-match %"] if strict else []), rows)] if rows else [],
        ["accuracy"],
    )


def paired(s: dict, samples: int) -> dict:
    cs = s["comparisons"]
    rows = [
        [
            c["label"],
            _sides(c),
            c["n"],
            pct(c["acc_a"]),
            pct(c["acc_b"]),
            signed(c["diff"]),
            ci(c["ci95"]),
            c["a_only"],
            c["b_only"],
            pvalue(c["p_mcnemar"]),
        ]
        for c in cs
    ]
    notes = [
        "Every pair of evals with shared questions, joined by question id on the first (greedy) answer; "
        "the method's key pairs (RL vs SFT, RL vs teacher, SFT vs teacher, SFT vs its base student) "
        f"are highlighted. n: shared questions; A - B in points; 95% CI: paired bootstrap ({samples} resamples "
        "of questions, fixed seed); only A / only B: the questions only A / only B answered right (they decide "
        "it); p: exact two-sided McNemar test on them."
    ]
    if any("a_filter" in c for c in cs):
        notes.append(
            "A row \"X (rerank) vs X (single)\" compares within one eval: the sample its reward model scores "
            "highest (best-of-k by RM) against the first sample, question by question."
        )
    if not cs:
        notes = ["not run: fewer than two evals with per-question samples (hub-task evals have none)"]
    return section(
        "Paired comparisons",
        notes,
        [
            table(
                [
                    "comparison",
                    "A vs B",
                    "n",
                    "A %",
                    "B %",
                    "A - B",
                    "95% CI",
                    "only A",
                    "only B",
                    "p",
                ],
                rows,
                [c["highlight"] for c in cs],
                fold=f"All {len(cs)} paired comparisons ({sum(c['highlight'] for c in cs)} key ones highlighted)",
            )
        ]
        if cs
        else [],
    )


def _sides(c: dict) -> str:
    """ "A vs B" by stage; a comparison within one eval (best-of-k by RM vs single sample) names the readings."""
    if "a_filter" in c:
        return f"{c['a']} ({c['a_filter']}) vs {c['b']} ({c['b_filter']})"
    return f"{c['a']} vs {c['b']}"


def key_comparisons(every_pair: dict) -> list[dict]:
    """The highlighted rows of the paired comparisons (the method's key pairs), as their own table."""
    out = []
    for t in every_pair["tables"]:
        rows = [r for r, hl in zip(t["rows"], t["highlight"]) if hl]
        fold = f"{len(rows)} key comparisons" if len(rows) > KEY_ROWS_SHOWN else None
        out.append(table(["key comparison", *t["headers"][1:]], rows, fold=fold))
    return out


def in_words(s: dict, key: list[dict]) -> dict:
    """The page's answer: one sentence per highlighted comparison, the RL reward ladder's verdict, and
    their tables (`key`: the key comparisons' table). A sweep answers with its pooled sentences (the regime
    map's first, one per setting): one variant's sentences or ladder would be one seed's anecdote."""
    if s.get("sweep"):
        return _sweep_words(s, key)
    notes = list(s.get("sentences") or [])
    lad = s.get("ladder") or {}
    rows = [
        [
            REWARD_SOURCES[k].ladder_row,
            r["stage"],
            r["n"],
            signed(r["diff"]),
            ci(r["ci95"]),
            pvalue(r["p"]),
            r["verdict"],
        ]
        for k in LADDER
        if (r := (lad.get("rungs") or {}).get(k))
    ]
    if lad.get("finding"):
        notes.append("Reward ladder: " + lad["finding"])
    if "gold" in (lad.get("rungs") or {}):
        notes.append(
            "The gold rung is an ORACLE: its rl stage read gold distill answers. It bounds what RL can "
            "do here; it is not the method."
        )
    if notes and any(t["rows"] for t in key):
        notes.append('Key comparisons: the highlighted rows of "Paired comparisons" below (columns explained there).')
    rungs = table(["RL reward (vs its SFT student)", "stage", "n", "RL - SFT", "95% CI", "McNemar p", "verdict"], rows)
    return section(
        "What the comparisons say", notes or ["not run: no key comparison (need evals of the models)"], [*key, rungs]
    )


def _sweep_words(s: dict, key: list[dict]) -> dict:
    sw = s["sweep"]
    notes = [r["sentence"] for r in s.get("regime") or []] + [r["sentence"] for r in sw["pooled"]]
    notes.append(
        f"Pooled over seeds ({len(sw['variants'])} variants of {', '.join(sw['keys'])}); each variant's own "
        'comparisons are in "Across seeds and variants" and "Paired comparisons" below.'
    )
    return section("What the comparisons say", notes, key)


def voting(s: dict) -> dict:
    v, tables = s["voting"], []
    if v["evals"]:
        tables.append(
            table(
                ["stage", "model", "n", "single sample %", "majority vote %"],
                [[e["stage"], e["model"], e["n"], pct(e["single"]), pct(e["majority"])] for e in v["evals"]],
            )
        )
    if v["distill"]:
        tables.append(
            table(
                [
                    "teacher samples (distill split)",
                    "questions",
                    "samples",
                    "single sample %",
                    "majority vote %",
                    "pass@k %",
                ],
                [
                    [g, d["questions"], d["samples"], pct(d["single"]), pct(d["majority"]), pct(d["pass_at_k"])]
                    for g, d in v["distill"].items()
                ],
            )
        )
    notes = [
        "Sampled evals report the first sample and the majority over all samples; on the distill split, "
        "the teacher's responses are judged against gold here, after the fact (majority ties: smallest answer)."
    ]
    return section(
        "Single sample vs majority vote",
        notes if tables else ["not run: no sampled eval and no teacher samples with gold answers"],
        tables,
    )


def pseudo_labels(s: dict) -> dict:
    ps = s["pseudo_labels"]
    if not ps:
        return section("Pseudo-label quality", ["not run: the spec has no pseudo_reward stage"])
    head = [
        [p, "not run"] + ["n/a"] * 4
        if q["status"] != "ok"
        else [
            p,
            q["kept"],
            q["total"] if q["total"] is not None else "n/a",
            pct(q["coverage"]),
            pct(q.get("precision")),
            pct(q["mean_agreement"]),
        ]
        for p, q in ps.items()
    ]
    roles = [
        [p, r, b["responses"], pct(b["positive_rate"]), pct(b["positive_precision"]), pct(b["positive_recall"])]
        for p, q in ps.items()
        for r, b in q.get("by_role", {}).items()
    ]
    notes = [
        "Judged against gold distill answers after the fact (no earlier stage read them). Coverage = kept / "
        "questions the teacher answered; precision = pseudo-label equals gold; positive precision/recall: "
        "labels 1 among gold-correct responses of kept questions."
    ]
    if any(q.get("gold") is False for q in ps.values()):
        notes.append("Gold answers for the distill split are not available locally: precision and recall not computed.")
    return section(
        "Pseudo-label quality",
        notes,
        [
            table(["stage", "kept", "total", "coverage %", "precision %", "mean agreement %"], head),
            table(["stage", "responses of", "n", "label 1 %", "positive precision %", "positive recall %"], roles),
        ],
    )


def reward_models(s: dict) -> dict:
    rows = [
        [r, "not run", "n/a", "n/a", "n/a", "n/a"]
        if m is None
        else [
            r,
            pct(m.get("eval_accuracy")),
            m.get("eval_pairs", "n/a"),
            m.get("train_pairs", "n/a"),
            _kind(m, "student>student", "accuracy"),
            _kind(m, "teacher>student", "share"),
        ]
        for r, m in s["reward_models"].items()
    ]
    gold = [
        [
            r,
            g["scored"],
            g["questions"],
            g["k"],
            num(g["within_question_auc"]),
            g["auc_pairs"],
            pct(g["best_of_k"]),
            pct(g["mean_sample"]),
            pct(g["pass_at_k"]),
        ]
        for r, g in (s.get("reward_vs_gold") or {}).items()
        if g and "questions" in g
    ]
    notes = [
        "Pairwise accuracy on held-out pseudo-labelled pairs: the share where the chosen response scores higher. "
        "Teacher-vs-student pairs can be told apart by style alone; student-vs-student pairs only by the answer "
        "(both label-free checks)."
    ]
    notes += [w for r, m in s["reward_models"].items() if m and (w := method.rm_not_learned(r, m))]
    if gold:
        notes.append(
            "Against gold, after the fact, on the scored model's samples of held-out questions: "
            "within-question AUC = share of (right, wrong) response pairs of the same question ranked right "
            "(0.5 = chance); best-of-k = accuracy of the top-scored sample, against the mean sample and pass@k."
        )
    return section(
        "Reward model",
        notes if rows else ["not run: the spec has no reward_model stage"],
        [
            table(
                [
                    "stage",
                    "held-out pairwise accuracy %",
                    "eval pairs",
                    "train pairs",
                    "student-vs-student accuracy %",
                    "teacher-vs-student share %",
                ],
                rows,
            ),
            table(
                [
                    "stage",
                    "scored samples of",
                    "questions",
                    "k",
                    "within-question AUC",
                    "(right, wrong) pairs",
                    "best-of-k %",
                    "mean sample %",
                    "pass@k %",
                ],
                gold,
            ),
        ],
    )


def _kind(m: dict, kind: str, key: str) -> str:
    return pct(((m.get("eval_by_kind") or {}).get(kind) or {}).get(key))


def training(s: dict) -> dict:
    rows = []
    for sid, c in s["curves"].items():
        if c is None or not c["rows"]:
            rows.append([sid, "not run", "", "", ""])
        else:
            first, *others = CURVES[c["kind"]].keys  # the kind's curve: its first key, then the rest
            head, last = c["rows"][0], c["rows"][-1]
            rows.append(
                [
                    sid,
                    c["kind"],
                    len(c["rows"]),
                    f"{first} {num(head.get(first))} -> {num(last.get(first))}",
                    ", ".join(f"{k} {num(last.get(k))}" for k in others if last.get(k) is not None),
                ]
            )
    return section(
        "Training curves",
        ["Logged steps; first -> last value (report.html plots every step)."]
        if rows
        else ["not run: no training stage"],
        [table(["stage", "kind", "logged steps", "first -> last", "last KL"], rows)] if rows else [],
        [curve_plot(kind) for kind in CURVES],
    )


def examples(s: dict) -> dict:
    tables = [
        table(
            ["stage", "question id", "question", "target", "response", "correct"],
            [
                [
                    sid,
                    r["question_id"],
                    r["question"],
                    r["target"],
                    r["response"][:400],
                    "yes" if r["correct"] else "no",
                ]
                for r in rows
            ],
        )
        for sid, rows in s["examples"].items()
        if rows
    ]
    return section(
        "Sample responses",
        ["The same questions for every model (first response)."] if tables else ["not run: no eval samples"],
        tables,
    )


def provenance(s: dict) -> dict:
    seeds = s["seeds"]
    overrides = ", ".join(f"{k}={v}" for k, v in sorted(seeds["stage_overrides"].items())) or "none"
    notes = [
        f"Spec: {s['spec']}; hash: {s['spec_hash'] or 'unknown (no lock file)'}.",
        f"Seeds: spec {seeds['spec']}, report {seeds['report']} (bootstrap), stage overrides: {overrides}.",
    ]
    rows = [[k, v or "not installed"] for k, v in sorted(s["packages"].items())]
    return section("Provenance", notes, [table(["package", "version"], rows)] if rows else [])


def resources(s: dict) -> dict:
    rows = [
        [sid, "not run", "n/a", "n/a"]
        if b is None
        else [sid, num(b["wall_s"], 4), num(b["cpu_s"], 4), num(b["max_rss_mb"], 4)]
        for sid, b in s["resources"].items()
    ]
    total = sum((b or {}).get("wall_s") or 0 for b in s["resources"].values())
    return section(
        "Time and memory",
        [f"From Snakemake's benchmark files; total wall time {total:.1f} s."],
        [table(["stage", "wall s", "cpu s", "peak RSS MB"], rows)],
        env=True,
    )


def environment(s: dict) -> dict:
    e = s["environment"]
    rows = [
        ["git commit", e["git_commit"]],
        ["platform", e["platform"]],
        ["python", e["python"]],
        ["CPUs", e["cpus"]],
        ["torch", e["torch"] or "not installed"],
        ["GPUs", ", ".join(e["gpus"]) or "none"],
    ]
    return section("Environment", [], [table(["item", "value"], rows)], env=True)


# ----------------------------------------------------------------------------- plots
def plots(s: dict) -> dict[str, str]:
    """name -> inline PNG data URI, for the data that exists."""
    import matplotlib

    matplotlib.use("Agg")
    out = {}
    acc = [a for a in s["accuracy"] if a["status"] == "ok" and a["ci95"][0] is not None]
    if acc:
        fig = hbars(
            [f"{label_of(a)} [{a['stage']}]" for a in acc],
            [100 * a["accuracy"] for a in acc],
            [(100 * a["ci95"][0], 100 * a["ci95"][1]) for a in acc],
            right=[f"{pct(a['accuracy'])} {ci(a['ci95'])}" for a in acc],
            title="Accuracy per eval",
            xlabel="accuracy % (bars: 95% Wilson CI)",
        )
        out["accuracy"] = png(fig)
    for kind, curve in CURVES.items():  # every kind that declares a curve (compiler.spec.stagekind.Curve)
        keys = curve.keys
        lines = {sid: c["rows"] for sid, c in s["curves"].items() if c and c["kind"] == kind and c["rows"]}
        if lines:
            out[curve_plot(kind)] = _lines({k: lines for k in keys}, f"{kind}: {', '.join(keys)} per step")
    return out | sweep_plots(s)


def curve_plot(kind: str) -> str:
    """The name of a kind's training-curve plot in the page."""
    return f"{kind}_curve"


def _lines(panels: dict[str, dict[str, list]], title: str) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.6 * len(panels) + 1.5, 3), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, lines) in zip(axes, panels.items()):
        for sid, rows in lines.items():
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=sid, marker="." if len(pts) < 30 else None)
        ax.set(xlabel="step", ylabel=key)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return png(fig)


# ----------------------------------------------------------------------------- templates
def render(s: dict, bootstrap_samples: int) -> tuple[str, str]:
    """(html, markdown) from the summary."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("runtime", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md"] = lambda text: (
        str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "\\<").replace("\n", " ")
    )  # cell text stays text: no columns, tags or lines
    secs = sections(s, bootstrap_samples)
    ctx = {"s": s, "sections": secs, "env_marker": ENV_MARKER}
    return (
        env.get_template("report.html.j2").render(ctx, plots=plots(s)),
        env.get_template("report.md.j2").render(ctx),
    )
