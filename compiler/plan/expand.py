"""A spec with a `sweep:` block -> one plan in which every stage that no swept value reaches is shared.

Each variant is planned on its own first (so every variant is checked as a whole spec).
A swept key reaches the stage it names (`seed`: every stage, since task data and init
weights derive from it; `models.<m>.*`: the stages that load model m) and everything
downstream of those in any variant. A stage's id gets a suffix for each key that reaches
it (`student_rl__seed_1__learning_rate_0p0003`), so variants that agree on those keys name
the same stage, with the same resolved config and the same upstream: one job, shared.
Names depend only on the values, never on the list's length or order, so adding a value
to a list adds stages and leaves the existing ones (and their outputs) as they are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

from pydantic import ValidationError

from ..spec.errors import Problem, SpecError
from ..spec.schema import Spec
from ..spec.stages import REPORT
from ..spec.sweep import apply, key_path, variants
from ..spec.yamlload import Positions
from .planner import Plan, Planner, plan_spec, resolved_spec


def expand(spec: Spec, positions: Positions, file: str, root: Path) -> Plan:
    """Plan every variant, then merge them into one plan; raise SpecError listing every variant's problems."""
    points, base = variants(spec.sweep), spec.model_dump(mode="json")
    specs, plans, problems = [], [], []
    for values in points:
        tag = f" (in the variant {describe_values(values)})"
        try:
            specs.append(Spec.model_validate(apply(base, values)))
            plans.append(plan_spec(specs[-1], positions, file, root))
        except SpecError as exc:
            problems += [dataclasses.replace(p, message=p.message + tag) for p in exc.problems]
        except ValidationError as exc:
            line, col = positions.find(("sweep",))
            problems += [
                Problem(e["msg"].removeprefix("Value error, ") + tag, "sweep", file, line, col) for e in exc.errors()
            ]
    if problems:
        raise SpecError(_dedupe(problems))
    keys = [k for k in spec.sweep if k != "zip"]
    reach = _reach(keys, plans)
    merged, table, seeds = _merge(spec, keys, reach, points, specs)
    plan = plan_spec(merged, Positions(), file, root)
    for job in plan.jobs:  # seed is a spec-level value: each variant's stages carry their own
        if job.id in seeds:
            own = merged.stages[job.id].seed
            job.config.seed, job.config.spec_seed = (own if own is not None else seeds[job.id]), seeds[job.id]
    pl = Planner(spec, positions, file, root)
    plan.resolved = resolved_spec(pl, pl.task())  # the lock keeps the sweep block: it rebuilds the same plan
    uses: dict[str, int] = {}
    for row in table:
        for sid in row["stages"].values():
            uses[sid] = uses.get(sid, 0) + 1
    plan.sweep = {
        "keys": keys,
        "lists": {k: spec.sweep[k] for k in keys},
        "zip": spec.sweep.get("zip", []),
        "variants": table,
        "seeds": seeds,
        "reach": {k: sorted(v) for k, v in reach.items()},
        "uses": uses,
    }
    return plan


def _reach(keys: list[str], plans: list) -> dict[str, set[str]]:
    """Swept key -> the (base) stage ids whose config it can change, directly or through upstream."""
    parents: dict[str, set] = {}
    loads: dict[str, set] = {}  # stage -> model ids it loads directly
    for plan in plans:
        for job in plan.jobs:
            if job.config.kind != REPORT:
                parents.setdefault(job.id, set()).update(job.deps)
                loads.setdefault(job.id, set()).update(
                    n
                    for r in job.config.models.values()
                    if r.source != "stage"
                    for n in (r.name, r.parent.name if r.parent else r.name)
                )
    out = {}
    for key in keys:
        path = key_path(key)
        if path == ("seed",):
            hit = set(parents)
        elif path[0] == "models":
            hit = {s for s, models in loads.items() if path[1] in models}
        else:
            hit = {path[1]}
        while True:
            new = {s for s, ps in parents.items() if ps & hit} - hit
            if not new:
                break
            hit |= new
        out[key] = hit
    return out


def _merge(spec: Spec, keys: list[str], reach: dict, points: list[dict], specs: list[Spec]):
    """One spec holding every variant's stages under their suffixed ids, references rewired."""
    names, texts = _short_names(keys), _id_texts(spec.sweep, keys)
    stages: dict = {}
    models: dict = {}
    seeds: dict[str, int] = {}
    table: list[dict] = []
    for values, sv in zip(points, specs):
        mids = {
            m: m + _suffix(values, [k for k in keys if key_path(k)[:2] in _model_keys(sv, m)], names, texts)
            for m in sv.models
        }
        sids = {
            s: s + _suffix(values, [k for k in keys if s in reach[k]], names, texts)
            for s, st in sv.stages.items()
            if st.kind != REPORT
        }
        rename = {**mids, **sids}
        for m, new in mids.items():
            model = sv.models[m]  # a pruned model keeps layers of this variant's parent
            _put(
                models,
                new,
                model.model_copy(update={"parent": mids.get(model.parent, model.parent)}) if model.parent else model,
            )
        for s, new in sids.items():
            _put(stages, new, _rewire(sv.stages[s], rename))
            seeds[new] = values.get("seed", spec.seed)
        table.append({"values": values, "label": describe_values(values), "stages": sids, "models": mids})
    stages.update({s: st for s, st in spec.stages.items() if st.kind == REPORT})
    return spec.model_copy(update={"models": models, "stages": stages, "sweep": {}}), table, seeds


def _model_keys(spec: Spec, m: str) -> set[tuple]:
    """The `models.<id>` prefixes whose swept values change model `m`: its own, and a pruned model's parent's."""
    parent = spec.models[m].parent
    return {("models", m)} | ({("models", parent)} if parent else set())


def _rewire(stage, rename: dict):
    """The stage with its references pointing at this variant's stages and models."""
    update = {}
    for f in (r.field for r in stage.refs):
        value = getattr(stage, f, None)
        if isinstance(value, str):
            update[f] = rename.get(value, value)
        elif isinstance(value, list):
            update[f] = [rename.get(v, v) for v in value]
    return stage.model_copy(update=update)


def _put(into: dict, key: str, value) -> None:
    """Two variants naming one stage must agree on it entirely: that is what sharing means."""
    if key in into and into[key].model_dump() != value.model_dump():
        raise RuntimeError(f"sweep expansion: two variants disagree on the shared entry {key!r}")
    into[key] = value


def _short_names(keys: list[str]) -> dict[str, str]:
    """A key's name in ids: its last part, or the whole key when two keys end alike."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (k.split(".")[-1] if last.count(k.split(".")[-1]) == 1 else k.replace(".", "_")) for k in keys}


def _suffix(values: dict, keys: list[str], names: dict, texts: dict) -> str:
    return "".join(f"__{names[k]}_{texts[k][_canon(values[k])]}" for k in keys)


def _canon(value) -> str:
    return json.dumps(value, sort_keys=True)


def _id_texts(sweep: dict, keys: list[str]) -> dict[str, dict[str, str]]:
    """key -> {value: its text in ids}; a key whose values would print alike (1e-10 and 1.000001e-10
    both print 1em10) names them by a hash instead, so that two variants never share an id by accident."""
    out = {}
    for k in keys:
        texts = {_canon(v): id_value(v) for v in sweep[k]}
        if len(set(texts.values())) < len(texts):
            texts = {c: "h" + hashlib.sha256(c.encode()).hexdigest()[:8] for c in texts}
        out[k] = texts
    return out


def id_value(value) -> str:
    """A value as it can appear in a rule name and folder: 3e-05 -> 3em05, 0.0001 -> 0p0001, 'ppo' -> ppo."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"{value:g}".replace("-", "m").replace("+", "").replace(".", "p")
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.\-]{1,24}", value):
        return id_value_text(value)
    if isinstance(value, list) and len(value) <= 4 and all(isinstance(v, (int, float, str)) for v in value):
        return "_".join(id_value(v) for v in value) or "empty"
    return "h" + hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]


def id_value_text(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


def describe_values(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _dedupe(problems: list[Problem]) -> list[Problem]:
    """The same problem in several variants is one problem; its first variant names it."""
    seen, out = set(), []
    for p in problems:
        key = (p.file, p.line, p.col, p.field, p.message.split(" (in the variant ")[0])
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def describe(plan) -> list[str]:
    """`distillc plan`'s sweep lines: the variants, and per stage how many jobs and how they are shared."""
    sw = plan.sweep
    n = len(sw["variants"])
    lists = " x ".join(f"{k} {json.dumps(sw['lists'][k])}" for k in sw["keys"])
    lines = [f"sweep: {n} variants ({lists}{'; zipped: ' + str(sw['zip']) if sw['zip'] else ''})"]
    lines += [f"  variant {i}: {v['label']}" for i, v in enumerate(sw["variants"])]
    width = max(len(s) for s in sw["variants"][0]["stages"])
    lines.append("stages (base id: jobs, and what they vary with):")
    for base in sw["variants"][0]["stages"]:
        jobs = sorted({v["stages"][base] for v in sw["variants"]})
        varies = [k for k in sw["keys"] if base in sw["reach"][k]]
        share = "shared by all variants" if len(jobs) == 1 else f"one per {' x '.join(varies)}"
        used = sorted({sw["uses"][j] for j in jobs})
        lines.append(
            f"  {base:<{width}}  {len(jobs)} job{'s' if len(jobs) != 1 else ''}  {share}"
            + (f", each used by {'/'.join(map(str, used))} variants" if 1 < len(jobs) < n else "")
        )
    return lines
