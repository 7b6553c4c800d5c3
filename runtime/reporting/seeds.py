"""The report across variants and seeds (a spec with a `sweep:` block): summary.json's "sweep".

One seed is an anecdote: on the demo a seed changes the data split, the tokenizer corpus,
every init and every sample. So the sweep section reports, per setting (the non-seed swept
values):
- per eval stage, the mean accuracy over seeds with a 95% t interval across seeds (n - 1 df):
  how far a seed moves a result;
- per seed, the method's key comparisons (RL vs SFT, SFT vs teacher, RL vs teacher) on that
  seed's test questions: paired bootstrap CI and exact McNemar p, as in the main table;
- pooled over seeds, the same comparisons over every (seed, question) pair: the mean
  difference, a 95% CI from a paired bootstrap stratified by seed (questions are resampled
  within each seed, so a pair never leaves its seed), and the p-value of the exact sign-flip
  test on the pairs (each pair's difference is -1, 0 or +1, so it is the exact McNemar test on
  the pooled discordant pairs); and a sentence per comparison.
Every random draw has a fixed seed: identical inputs give identical numbers.
"""

from __future__ import annotations

from compiler.spec.stages import all_roles

from ..lib.common import derive_seed
from . import regime
from .format import ci, hbars, label_of, pct, png, pvalue, section, signed, table
from .stats import mcnemar_exact, paired_bootstrap, stratified_bootstrap, t_interval

# The comparisons pooled across seeds: each report role against the roles its kind lists (compiler/spec/stages.py),
# later roles first; not against the untrained base student (a foregone conclusion). Every eval of a role is
# compared (the RL rungs of a reward ladder are three evals of the role "rl"), against the first eval of the other.
KEY = [
    (r.name, other)
    for r in sorted(all_roles().values(), key=lambda r: -r.rank)
    for other in r.compared_with
    if other != "student"
]


# ----------------------------------------------------------------------------- hooks used by report.py
def stage_seed(lock: dict, sid: str, default: int) -> int:
    """The spec seed a stage ran with (a swept seed gives each variant's stages their own)."""
    return ((lock.get("sweep") or {}).get("seeds") or {}).get(sid, default)


def within_variants(evals: list[dict], lock: dict, compare) -> list[dict]:
    """compare(evals) for each variant's evals: question ids of different seeds name different
    questions, so pairs across variants are never formed. A pair shared by variants counts once."""
    sweep = lock.get("sweep")
    if not sweep:
        return compare(evals)
    out, seen = [], set()
    for v in sweep["variants"]:
        mine = set(v["stages"].values())
        for c in compare([e for e in evals if e["stage"] in mine]):
            if (c["a"], c["b"]) not in seen:
                seen.add((c["a"], c["b"]))
                out.append(c)
    return sorted(out, key=lambda c: not c["highlight"])


def paired(a: dict, b: dict) -> tuple[list[int], list[int]]:
    """Correct (1/0) per shared question, in question order."""
    ca = {r["question_id"]: int(bool(r["correct"])) for r in a["samples"]}
    cb = {r["question_id"]: int(bool(r["correct"])) for r in b["samples"]}
    shared = sorted(set(ca) & set(cb))
    return [ca[q] for q in shared], [cb[q] for q in shared]


# ----------------------------------------------------------------------------- the summary
def summarize(lock: dict, evals: list[dict], accuracy: list[dict], samples: int, seed: int) -> dict | None:
    """summary.json's "sweep": None for a spec without a sweep."""
    sweep = lock.get("sweep")
    if not sweep:
        return None
    settings = settings_of(lock)
    evals_by = {e["stage"]: e for e in evals}
    acc_by = {a["stage"]: a for a in accuracy if a.get("status") == "ok"}
    out = {
        "variants": [v["label"] for v in sweep["variants"]],
        "keys": sweep["keys"],
        "accuracy": [],
        "per_seed": [],
        "pooled": [],
    }
    for name, vs in settings.items():
        out["accuracy"] += _accuracy(name, vs, evals_by, acc_by)
        per_seed = _per_seed(name, vs, evals_by, samples, seed)
        out["per_seed"] += per_seed
        out["pooled"] += _pooled(name, per_seed, samples, seed)
    for r in out["per_seed"]:
        del r["pairs"]  # the per-question differences: only the pooled statistics need them
    return out


def settings_of(lock: dict) -> dict[str, list[dict]]:
    """The sweep's variants grouped by setting (their non-seed values, e.g. "teacher.stop_at_dev_accuracy=0.7";
    "all" when only the seed is swept), in sweep order; each variant's values include its seed."""
    settings: dict[str, list[dict]] = {}
    spec_seed = (lock.get("spec") or {}).get("seed", 0)
    for v in (lock.get("sweep") or {}).get("variants", []):
        v = {**v, "values": {"seed": spec_seed, **v["values"]}}
        rest = {k: x for k, x in v["values"].items() if k != "seed"}
        settings.setdefault(", ".join(f"{k}={x}" for k, x in rest.items()) or "all", []).append(v)
    return settings


def _accuracy(name: str, vs: list[dict], evals_by: dict, acc_by: dict) -> list[dict]:
    rows = []
    for base in vs[0]["stages"]:
        stages = [v["stages"][base] for v in vs]
        if not all(s in evals_by for s in stages):
            continue
        accs = [acc_by[s]["accuracy"] for s in stages if s in acc_by]
        mean = sum(accs) / len(accs) if accs else None
        rows.append(
            {
                "setting": name,
                "stage": base,
                "role": evals_by[stages[0]]["role"],
                "label": label_of(evals_by[stages[0]]),
                "seeds": [v["values"].get("seed") for v in vs],
                "accuracy": [acc_by.get(s, {}).get("accuracy") for s in stages],
                "runs": len(accs),
                "of": len(stages),
                "mean": mean,
                "ci95": t_interval(accs),
            }
        )
    return rows


def _of_role(v: dict, role: str, evals_by: dict) -> dict[str, dict]:
    """The variant's evals (in spec order) of models in this role, with per-question samples, by base stage id."""
    return {
        base: evals_by[s]
        for base, s in v["stages"].items()
        if s in evals_by and evals_by[s]["role"] == role and evals_by[s]["samples"]
    }


def _per_seed(name: str, vs: list[dict], evals_by: dict, samples: int, seed: int) -> list[dict]:
    rows = []
    for ra, rb in KEY:
        for base in _of_role(vs[0], ra, evals_by):
            for v in vs:
                a, others = _of_role(v, ra, evals_by).get(base), _of_role(v, rb, evals_by)
                if a is None or not others:
                    continue
                b_base, b = next(iter(others.items()))
                x, y = paired(a, b)
                if x:
                    rows.append(_pair_row(name, v, a, b, [base, b_base], x, y, samples, seed))
    return rows


def _pair_row(
    name: str, v: dict, a: dict, b: dict, key: list[str], x: list[int], y: list[int], samples: int, seed: int
) -> dict:
    """One seed's paired comparison; "key" (the two base eval ids) joins it to the same pair in other seeds."""
    only_a, only_b = sum(p > q for p, q in zip(x, y)), sum(q > p for p, q in zip(x, y))
    return {
        "setting": name,
        "seed": v["values"].get("seed"),
        "a": a["stage"],
        "b": b["stage"],
        "label": f"{label_of(a)} vs {label_of(b)}",
        "names": [label_of(a), label_of(b)],
        "key": key,
        "n": len(x),
        "diff": (sum(x) - sum(y)) / len(x),
        "ci95": list(paired_bootstrap(x, y, samples, derive_seed(seed, a["stage"], b["stage"]))),
        "a_only": only_a,
        "b_only": only_b,
        "p_mcnemar": mcnemar_exact(only_a, only_b),
        "pairs": [p - q for p, q in zip(x, y)],
    }


def _pooled(name: str, per_seed: list[dict], samples: int, seed: int) -> list[dict]:
    rows = []
    for key in dict.fromkeys(tuple(r["key"]) for r in per_seed):
        mine = [r for r in per_seed if tuple(r["key"]) == key]
        pairs = [d for r in mine for d in r["pairs"]]
        diffs = [r["diff"] for r in mine]
        wins, ties = sum(d > 0 for d in diffs), sum(d == 0 for d in diffs)
        a_only, b_only = sum(r["a_only"] for r in mine), sum(r["b_only"] for r in mine)
        lo_hi = stratified_bootstrap([r["pairs"] for r in mine], samples, derive_seed(seed, "pooled", name, *key))
        row = {
            "setting": name,
            "label": mine[0]["label"],
            "names": mine[0]["names"],
            "key": list(key),
            "seeds": len(mine),
            "wins": wins,
            "ties": ties,
            "pairs": len(pairs),
            "diff": sum(pairs) / len(pairs),
            "ci95": lo_hi,
            "ci95_across_seeds": t_interval(diffs),
            "a_only": a_only,
            "b_only": b_only,
            "p_sign_flip": mcnemar_exact(a_only, b_only),
        }
        row["sentence"] = sentence(row)
        rows.append(row)
    return rows


def sentence(r: dict) -> str:
    """'RL student > SFT student in 3 of 3 seeds, mean +1.2 points, 95% CI [-0.4, 2.8], p = 0.14.'"""
    a, b = r["names"]
    tie = f" ({r['ties']} tied)" if r["ties"] else ""
    return (
        f"{a} > {b} in {r['wins']} of {r['seeds']} seed{'s' if r['seeds'] != 1 else ''}{tie}, "
        f"mean {signed(r['diff'])} points, 95% CI {ci(r['ci95'])}, p = {pvalue(r['p_sign_flip'])} "
        f"({r['pairs']} question-seed pairs{'' if r['setting'] == 'all' else '; ' + r['setting']})."
    )


# ----------------------------------------------------------------------------- the page
def sweep_section(s: dict) -> list[dict]:
    """The page's "Regime map" (a sweep over more than the seed) and "Across seeds and variants" sections
    (none without a sweep)."""
    sw = s.get("sweep")
    if not sw:
        return []
    acc = table(
        ["setting", "stage", "role", "seeds", "accuracy % per seed", "mean %", "95% CI across seeds"],
        [
            [
                r["setting"],
                r["stage"],
                label_of(r),
                ", ".join(map(str, r["seeds"])),
                " / ".join(pct(a) for a in r["accuracy"]),
                pct(r["mean"]),
                ci(r["ci95"]),
            ]
            for r in sw["accuracy"]
        ],
    )
    per = table(
        [
            "setting",
            "seed",
            "comparison",
            "A vs B",
            "n",
            "A - B",
            "95% CI",
            "only A right",
            "only B right",
            "McNemar p",
        ],
        [
            [
                r["setting"],
                r["seed"],
                r["label"],
                f"{r['a']} vs {r['b']}",
                r["n"],
                signed(r["diff"]),
                ci(r["ci95"]),
                r["a_only"],
                r["b_only"],
                pvalue(r["p_mcnemar"]),
            ]
            for r in sw["per_seed"]
        ],
    )
    pooled = table(
        [
            "setting",
            "comparison",
            "A better in",
            "pairs",
            "mean A - B",
            "95% CI (pairs)",
            "95% CI across seeds",
            "sign-flip p",
        ],
        [
            [
                r["setting"],
                r["label"],
                f"{r['wins']} of {r['seeds']} seeds",
                r["pairs"],
                signed(r["diff"]),
                ci(r["ci95"]),
                ci(r["ci95_across_seeds"]),
                pvalue(r["p_sign_flip"]),
            ]
            for r in sw["pooled"]
        ],
    )
    notes = [
        f"{len(sw['variants'])} variants of {', '.join(sw['keys'])}; a setting is the variants' non-seed values. "
        "Mean accuracy over seeds with a 95% t interval across seeds. Per seed: paired comparisons on that "
        "seed's test questions (paired bootstrap CI, exact McNemar p). Pooled: every (seed, question) pair; "
        "CI from a paired bootstrap stratified by seed, p from the exact sign-flip test on the pairs "
        "(= exact McNemar on the pooled discordant pairs); the CI across seeds treats each seed's difference "
        "as one observation."
    ] + [r["sentence"] for r in sw["pooled"]]
    return [
        *regime.page_section(s.get("regime")),
        section("Across seeds and variants", notes, [acc, per, pooled], ["sweep_accuracy"]),
    ]


def sweep_plots(s: dict) -> dict[str, str]:
    """Accuracy per stage and setting: bars at the mean over seeds, 95% t error bars, one dot per seed."""
    sw = s.get("sweep")
    rows = [r for r in (sw or {}).get("accuracy", []) if r["mean"] is not None]
    if not rows:
        return {}
    return _accuracy_plot(rows) | regime.plot(s.get("regime"))


def _accuracy_plot(rows: list[dict]) -> dict[str, str]:
    """One horizontal bar per (setting, eval) at the mean over seeds, 95% t error bars, a dot per seed:
    rows grouped by eval (the settings side by side, one colour each), named by role and stage id."""
    order = list(dict.fromkeys(r["stage"] for r in rows))
    rows = sorted(rows, key=lambda r: order.index(r["stage"]))  # stable: settings stay in sweep order
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    fig = hbars(
        [f"{label_of(r)} [{r['stage']}]" for r in rows],
        [100 * r["mean"] for r in rows],
        [tuple(None if x is None else 100 * x for x in r["ci95"]) for r in rows],  # type: ignore[misc]  # a pair
        title="Accuracy per eval and setting (mean over seeds, 95% t CI; dots: seeds)",
        xlabel="accuracy %",
        right=[f"{pct(r['mean'])} {ci(r['ci95'])}" for r in rows],
        dots=[[100 * a for a in r["accuracy"] if a is not None] for r in rows],
        groups=[r["setting"] for r in rows] if len(settings) > 1 else None,
    )
    return {"sweep_accuracy": png(fig)}
