"""The report's "cut off and unanswered" numbers: per stage, the share of responses that ran to
max_new_tokens without stopping and the share with no answer, and how many cut-off responses the
training stages left out.

Why: a real model that does not stop rambles until the token limit; its answer may be missing or
repeated, and a student trained on such text learns not to stop. Nothing else in the report shows
it. Files from runs older than these counts lack the fields: their stages show nothing (not zero).
Pure Python; every number comes from the stages' own files:
- generate: generate_stats.json beside responses.jsonl ("responses", "cut_off", "no_answer": counts);
- eval: metrics.json ("responses", "cut_off_share", "no_answer_share");
- pseudo_reward: stats.json ("cut_off": {"dropped", "keep_cut_off"});
- sft, distill_logits: task.TRAINING_DATA beside model/ ("rows", "cut_off_dropped", "keep_cut_off").
"""

from __future__ import annotations

from pathlib import Path

from compiler.spec.contract import ReportConfig

from ..lib.common import read_json
from ..lib.task import TRAINING_DATA
from .format import pct, section, table

TRAINING_KINDS = ("pseudo_reward", "sft", "distill_logits")


def _json(path: str | Path | None) -> dict | None:
    return read_json(path) if path and Path(path).is_file() else None


def _beside(path: str | None, name: str) -> Path | None:
    """A stage's undeclared file, in the stage folder that holds its declared output `path`."""
    return Path(path).parent / name if path else None


def responses(cfg: ReportConfig, up: dict) -> list[dict]:
    """[{stage, kind, responses, cut_off, no_answer}] (shares) for generate and eval stages that counted."""
    out = []
    for g in up.get("generate", []):
        st = _json(_beside(cfg.stage_file(g, "responses"), "generate_stats.json")) or {}
        n = st.get("responses")
        if n is not None and "cut_off" in st and "no_answer" in st:
            out.append(
                {
                    "stage": g,
                    "kind": "generate",
                    "responses": n,
                    "cut_off": st["cut_off"] / n if n else None,
                    "no_answer": st["no_answer"] / n if n else None,
                }
            )
    for e in up.get("eval", []):
        m = _json(cfg.stage_file(e, "metrics")) or {}
        if "responses" in m and "cut_off_share" in m and "no_answer_share" in m:
            out.append(
                {
                    "stage": e,
                    "kind": "eval",
                    "responses": m["responses"],
                    "cut_off": m["cut_off_share"],
                    "no_answer": m["no_answer_share"],
                }
            )
    return out


def left_out(cfg: ReportConfig, up: dict) -> list[dict]:
    """[{stage, kind, dropped, keep_cut_off}]: cut-off responses each training-data stage left out."""
    out = []
    for p in up.get("pseudo_reward", []):
        cut = (_json(cfg.stage_file(p, "stats")) or {}).get("cut_off")
        if cut is not None:
            out.append(
                {"stage": p, "kind": "pseudo_reward", "dropped": cut["dropped"], "keep_cut_off": cut["keep_cut_off"]}
            )
    for kind in ("sft", "distill_logits"):
        for s in up.get(kind, []):
            rec = _json(_beside(cfg.stage_file(s, "model"), TRAINING_DATA))  # absent for data: gold
            if rec is not None:
                out.append(
                    {
                        "stage": s,
                        "kind": kind,
                        "dropped": rec["cut_off_dropped"],
                        "rows": rec["rows"],
                        "keep_cut_off": rec["keep_cut_off"],
                    }
                )
    return out


def collect(cfg: ReportConfig, up: dict) -> dict:
    """summary.json's "cut_off" entry."""
    return {"responses": responses(cfg, up), "left_out": left_out(cfg, up)}


def page_section(s: dict) -> dict:
    """The report page's section (report_page.sections lists it after the accuracy)."""
    c = s.get("cut_off") or {}
    tables = []
    if c.get("responses"):
        tables.append(
            table(
                ["stage", "kind", "responses", "cut off %", "no answer %"],
                [
                    [r["stage"], r["kind"], r["responses"], pct(r["cut_off"]), pct(r["no_answer"])]
                    for r in c["responses"]
                ],
            )
        )
    if c.get("left_out"):
        tables.append(
            table(
                ["stage", "kind", "cut-off responses left out", "kept by keep_cut_off"],
                [
                    [
                        r["stage"],
                        r["kind"],
                        "none (kept)" if r["keep_cut_off"] else r["dropped"],
                        "yes" if r["keep_cut_off"] else "no",
                    ]
                    for r in c["left_out"]
                ],
            )
        )
    notes = [
        "Cut off: the response ran to max_new_tokens without an end-of-turn token. No answer: the reader "
        "(runtime.lib.answers) finds no final answer in it. Training data (SFT, logit distillation) and pseudo-label "
        "pairs leave cut-off responses out unless the stage sets keep_cut_off: true."
    ]
    return section(
        "Cut-off and unanswered responses",
        notes if tables else ["not run: no stage of this run counted cut-off responses (runs older than these counts)"],
        tables,
    )
