"""Complete model cards: each model folder's own card plus this run's eval results.

A training stage writes its model's README.md before any eval has run, and no stage may
change another stage's outputs (Snakemake would rerun it). So the report, which reads
every model folder and every eval's metrics.json as declared inputs, writes the complete
card beside its own outputs: runs/<spec>/report/model_cards/<stage>/README.md, the model
folder's card with one model-index result per eval of that model (accuracy on the test
split, and majority-vote accuracy where the eval samples several answers) and a table.
Upload the folder, then this card over its README.md (README: "Model cards").
"""

from __future__ import annotations

from pathlib import Path

from compiler.spec.contract import ReportConfig

from ..lib.common import atomic_write_text, log
from ..lib.model_card import data_sources


def eval_results(cfg: ReportConfig, rows: list[dict], lock: dict) -> list:
    """model-index EvalResults for one model's eval rows (summary["accuracy"] entries that ran);
    `lock`: the spec lock the report read as its declared input."""
    from huggingface_hub import EvalResult

    stages = (lock.get("expanded") or lock.get("spec") or {}).get("stages", {})
    datasets, _ = data_sources(cfg, "test")
    out = []
    for row in rows:
        local = not (stages.get(row["stage"]) or {}).get("hub_task")  # else an lm-eval task from the hub
        dataset = (datasets[0] if datasets else f"distillc/{cfg.spec_name}") if local else row["task"]
        common = dict(
            task_type="text-generation",
            dataset_type=dataset,
            dataset_split="test",
            dataset_name=f"{cfg.spec_name} test" if local else row["task"],
            metric_type="accuracy",
        )
        out.append(EvalResult(metric_name=f"accuracy ({row['stage']})", metric_value=row["accuracy"], **common))
        if row.get("majority") is not None:
            out.append(
                EvalResult(
                    metric_name=f"majority-vote accuracy ({row['stage']})", metric_value=row["majority"], **common
                )
            )
    return out


def table(rows: list[dict]) -> list[str]:
    lines = [
        "",
        "## Evaluation in this run",
        "",
        "| eval stage | model | accuracy % | 95% CI | n |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lo, hi = r["ci95"]
        lines.append(
            f"| {r['stage']} | {r['label']} | {100 * r['accuracy']:.1f} | [{100 * lo:.1f}, {100 * hi:.1f}] | {r['n']} |"
        )
    return lines + ["", "Held-out test questions, scored by lm-eval; the run's report.html has paired comparisons."]


def write(cfg: ReportConfig, summary: dict, lock: dict) -> list[Path]:
    """One complete card per model folder of this run that has a card; returns the files written."""
    from huggingface_hub import ModelCard

    by_model: dict[str, list[dict]] = {}
    for row in summary["accuracy"]:
        if row.get("status") == "ok" and row.get("accuracy") is not None:
            by_model.setdefault(row["model"], []).append(row)
    written = []
    for stage, folder in sorted(cfg.stage_files("model").items()):
        card_file = Path(folder) / "README.md"
        if not card_file.is_file():
            continue
        card = ModelCard.load(card_file)
        rows = by_model.get(stage, [])
        if rows:
            card.data.eval_results = (card.data.eval_results or []) + eval_results(cfg, rows, lock)
            card.text = card.text.rstrip("\n") + "\n" + "\n".join(table(rows)) + "\n"
        out = Path(cfg.out_dir) / "model_cards" / stage / "README.md"
        atomic_write_text(out, str(card))
        written.append(out)
    log(f"model cards with this run's eval results: {len(written)} in {Path(cfg.out_dir) / 'model_cards'}")
    return written
