"""report: tables, statistics and the page, on a fake run folder written by the test itself.

The fake run is specs/tiny.yaml compiled for real (so the report reads a real
stage config and lock file), with every other stage's declared outputs replaced
by small hand-made files that follow the data contract. The expected numbers
below are worked out by hand from those files, not by the report's code.
"""

from __future__ import annotations

import html as html_text
import json
import math
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from runtime import report
from runtime.lib.common import load_config
from runtime.reporting.page import ENV_MARKER
from runtime.lib.task import gold

BIN = Path(sys.executable).parent
TSV_HEAD = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
# Per-question correctness on 10 test questions: teacher 70%, student 10%, sft 50%, rl 80%.
CORRECT = {
    "eval_teacher": [1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "eval_student": [0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    "eval_sft": [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    "eval_rl": [1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
}


def wrong(target: str) -> str:
    return str(int(target) + 1)


def write(path, content) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, list):
        content = "".join(json.dumps(r) + "\n" for r in content)
    elif not isinstance(content, str):
        content = json.dumps(content)
    path.write_text(content)


def fake_eval(inputs: dict, sid: str, targets: list[str], correct: list[int] | None = None) -> None:
    correct = correct or CORRECT[sid]
    rows = [
        {
            "question_id": f"test-{i:05d}",
            "target": t,
            "responses": [f"{t if ok else wrong(t)} = x. #### {t if ok else wrong(t)}"],
            "answers": [t if ok else wrong(t)],
            "correct": bool(ok),
        }
        for i, (t, ok) in enumerate(zip(targets, correct))
    ]
    if sid == "eval_student":  # text that must be escaped in both files
        rows[0]["responses"] = ["<b>12</b> | 1\n#### 12"]
    acc = sum(correct) / len(correct)
    filters = {"greedy": {"accuracy": acc, "stderr": 0.1}}
    if sid == "eval_teacher":  # a sampled eval: single sample and majority vote
        filters = {"single": {"accuracy": acc, "stderr": 0.1}, "majority": {"accuracy": 0.8, "stderr": 0.1}}
    write(
        inputs[f"{sid}_metrics"],
        {
            "model": sid[5:],
            "stage": sid,
            "task": "distillc_tiny",
            "n": len(rows),
            "accuracy": acc,
            "stderr": 0.1,
            "metrics": filters,
        },
    )
    write(inputs[f"{sid}_samples"], rows)


def fake_labels(inputs: dict, g: list[str]) -> None:
    """4 kept questions (q3's pseudo-label is wrong), 1 dropped: see test_pseudo_label_quality."""
    answers = [
        ([g[0], g[0]], [g[0], wrong(g[0])], g[0]),
        ([g[1], wrong(g[1])], [wrong(g[1])] * 2, g[1]),
        ([g[2], g[2]], [None, g[2]], g[2]),
        ([wrong(g[3])] * 2, [g[3], wrong(g[3])], wrong(g[3])),
    ]
    rows = []
    for q, (teacher, student, pl) in enumerate(answers):
        for role, source, ans in (("teacher", "teacher_samples", teacher), ("student", "student_samples", student)):
            rows += [
                {
                    "question_id": f"distill-{q:05d}",
                    "source": source,
                    "role": role,
                    "sample_id": i,
                    "temperature": 1.0,
                    "text": f"#### {a}",
                    "answer": a,
                    "pseudo_label": pl,
                    "agreement": 1.0,
                    "label": int(a == pl),
                }
                for i, a in enumerate(ans)
            ]
    for p in ("teacher_votes", "rewards"):
        write(inputs[f"{p}_labels"], rows)
        write(
            inputs[f"{p}_pairs"],
            [
                {
                    "question_id": "distill-00000",
                    "chosen": "#### 4",
                    "rejected": "#### 5",
                    "chosen_source": "teacher_samples",
                    "rejected_source": "student_samples",
                }
            ],
        )
        write(inputs[f"{p}_stats"], {"questions": {"total": 5, "kept": 4, "dropped": 1}, "mean_agreement": 0.9})


def fake_responses(path, g: list[str], answers: list[list]) -> None:
    write(
        path,
        [
            {
                "question_id": f"distill-{q:05d}",
                "sample_id": i,
                "temperature": 1.0,
                "seed": 0,
                "text": f"#### {a}",
                "answer": a,
                "num_tokens": 3,
            }
            for q, ans in enumerate(answers)
            for i, a in enumerate(ans)
        ],
    )


def fake_run(configs: dict) -> dict:
    """Write every upstream output of specs/tiny.yaml; return the report's inputs."""
    cfg = load_config(configs["report"], "report")
    inputs = cfg.inputs
    targets = [r["target"] for r in gold(cfg.task, "test", cfg.spec_seed)[:10]]
    g = [r["target"] for r in gold(cfg.task, "distill", cfg.spec_seed)[:5]]
    for sid in CORRECT:
        fake_eval(inputs, sid, targets)
    fake_labels(inputs, g)
    # teacher samples: majority right on q0, q2, q4 (3/5); 8 of 15 samples right; some sample right everywhere.
    fake_responses(
        inputs["teacher_samples_responses"],
        g,
        [
            [g[0], g[0], wrong(g[0])],
            [g[1], wrong(g[1]), wrong(g[1])],
            [g[2]] * 3,
            [wrong(g[3]), wrong(g[3]), g[3]],
            [g[4], None, None],
        ],
    )
    for sid in ("student_samples", "sft_samples"):
        fake_responses(inputs[f"{sid}_responses"], g, [[wrong(t)] for t in g])
    for sid, losses in (("teacher", [3.0, 2.0, 1.2]), ("student_sft", [2.5, 1.5]), ("rm", [0.69, 0.5, 0.4])):
        write(Path(inputs[f"{sid}_model"]) / "config.json", {})
        write(
            Path(inputs[f"{sid}_model"]) / "train_log.jsonl",
            [{"step": 10 * (i + 1), "loss": v, "learning_rate": 1e-3} for i, v in enumerate(losses)]
            + [{"step": 10 * len(losses), "train_runtime": 1.0}],
        )
    write(inputs["rm_metrics"], {"eval_accuracy": 0.625, "eval_pairs": 8, "train_pairs": 72})
    write(inputs["rm_scores"], "")  # this spec's reward model scores no held-out samples
    write(Path(inputs["student_rl_model"]) / "config.json", {})
    write(
        inputs["student_rl_log"], [{"step": s, "reward": 0.1 * s, "kl": 0.01 * s, "entropy": 2.0} for s in range(1, 6)]
    )
    for i, key in enumerate(k for k in inputs if k.endswith("_benchmark")):
        write(inputs[key], TSV_HEAD + f"{1.5 + i}\t0:00:0{i % 10}\t{100 + i}\t200\t90\t95\t0\t0\t50\t{1.0 + i}\n")
    return inputs


def run_report(configs) -> tuple[str, str, dict]:
    report.main(["--config", str(configs["report"]), "--threads", "1"])
    out = Path("runs/tiny/report")
    return (
        (out / "report.html").read_text(),
        (out / "report.md").read_text(),
        json.loads((out / "summary.json").read_text()),
    )


@pytest.fixture
def tiny(built):
    configs = built(REPO / "tests" / "report_spec.yaml")
    return configs, fake_run(configs)


# ----------------------------------------------------------------------------- statistics
def test_statistics_on_hand_worked_cases():
    lo, hi = report.wilson(7, 10)  # textbook values for 7/10
    assert (round(lo, 4), round(hi, 4)) == (0.3968, 0.8922)
    assert report.wilson(0, 0) == (None, None)
    assert report.mcnemar_exact(3, 0) == pytest.approx(0.25)  # 2 * (1/2)^3
    assert report.mcnemar_exact(5, 1) == pytest.approx(2 * 7 / 64)  # 2 * (C(6,0)+C(6,1)) / 2^6
    assert report.mcnemar_exact(4, 4) == 1.0 and report.mcnemar_exact(0, 0) == 1.0
    assert report.mcnemar_exact(30, 0) < 1e-8
    lo, hi = report.paired_bootstrap([1] * 8 + [0] * 2, [1] * 5 + [0] * 5, 1000, 0)
    assert 0 <= lo < 0.3 < hi <= 0.7  # 3 of 10 questions discordant, all in favour of x
    assert report.paired_bootstrap([1, 0] * 5, [1, 0] * 5, 200, 1) == (0.0, 0.0)


def test_mcnemar_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(3, 0), (5, 1), (12, 7), (40, 25), (0, 9)]:
        assert report.mcnemar_exact(b, c) == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue)


# ----------------------------------------------------------------------------- the report
@pytest.mark.slow
def test_tables_hold_the_hand_computed_numbers(tiny):
    configs, _ = tiny
    html, md, s = run_report(configs)
    acc = {a["stage"]: a for a in s["accuracy"]}
    assert {k: a["accuracy"] for k, a in acc.items()} == {
        "eval_teacher": 0.7,
        "eval_student": 0.1,
        "eval_sft": 0.5,
        "eval_rl": 0.8,
    }
    assert acc["eval_teacher"]["majority"] == 0.8 and acc["eval_sft"]["majority"] is None
    assert [round(x, 4) for x in acc["eval_teacher"]["ci95"]] == [0.3968, 0.8922]
    assert {a["stage"]: a["role"] for a in s["accuracy"]} == {
        "eval_teacher": "teacher",
        "eval_student": "student",
        "eval_sft": "sft",
        "eval_rl": "rl",
    }
    cmp = {(c["a"], c["b"]): c for c in s["comparisons"]}
    assert len(cmp) == 6
    rl_sft, sft_base = cmp[("eval_rl", "eval_sft")], cmp[("eval_sft", "eval_student")]
    assert rl_sft["diff"] == pytest.approx(0.3) and (rl_sft["a_only"], rl_sft["b_only"]) == (3, 0)
    assert rl_sft["p_mcnemar"] == pytest.approx(0.25)
    assert sft_base["diff"] == pytest.approx(0.4) and sft_base["p_mcnemar"] == pytest.approx(7 / 32)
    assert rl_sft["ci95"][0] <= 0.3 <= rl_sft["ci95"][1]
    highlighted = [(c["a"], c["b"]) for c in s["comparisons"] if c["highlight"]]
    assert highlighted == [
        ("eval_rl", "eval_sft"),
        ("eval_rl", "eval_teacher"),
        ("eval_sft", "eval_teacher"),
        ("eval_sft", "eval_student"),
    ]
    assert not cmp[("eval_student", "eval_teacher")]["highlight"]
    # the same numbers, formatted, in both files
    assert "| teacher | eval_teacher | teacher | distillc_tiny | 10 | 70.0 | [39.7, 89.2] | 80.0 |" in md
    assert re.search(
        r"\| \*\*RL student \(learned RM\) vs SFT student\*\* \| eval_rl vs eval_sft \| 10 \| 80\.0 \| 50\.0 "
        r"\| \+30\.0 \|.*\| 3 \| 0 \| 0\.2500 \|",
        md,
    )
    assert "0.2188" in md and "0.2500" in html and "+30.0" in html
    assert "&lt;b&gt;12&lt;/b&gt;" in html and "<b>12" not in html
    for block in re.findall(r"(?:^\|.*\n)+", md, flags=re.M):  # every Markdown table keeps its columns
        assert len({len(re.findall(r"(?<!\\)\|", line)) for line in block.splitlines()}) == 1, block
    assert "\\<b>12\\</b> \\| 1 #### 12" in md
    # ... and in words: one sentence per highlighted comparison, the ladder's single rung
    lo, hi = (100 * x for x in rl_sft["ci95"])
    assert s["sentences"][0] == (
        f"RL student (learned RM) vs SFT student: +30.0 points, 95% CI [{lo:.1f}, {hi:.1f}], "
        "McNemar p = 0.25, n = 10: no detectable difference (the CI includes 0 or p >= 0.05)."
    )
    assert len(s["sentences"]) == 4 and s["sentences"][0] in md
    assert s["ladder"]["rungs"]["model"]["verdict"] == "no detectable difference"
    assert "no gold or majority rung ran" in s["ladder"]["finding"] and s["ladder"]["finding"] in md


@pytest.mark.slow
def test_pseudo_labels_voting_rm_and_curves(tiny):
    configs, _ = tiny
    _, md, s = run_report(configs)
    q = s["pseudo_labels"]["rewards"]
    assert (q["kept"], q["total"], q["coverage"], q["precision"]) == (4, 5, 0.8, 0.75)
    assert q["by_role"]["all"]["positive_recall"] == pytest.approx(7 / 8)  # q3's right student answer got 0
    assert q["by_role"]["all"]["positive_precision"] == pytest.approx(7 / 10)
    assert q["by_role"]["teacher"]["positive_recall"] == 1.0
    assert q["by_role"]["teacher"]["positive_precision"] == pytest.approx(5 / 7)
    d = s["voting"]["distill"]["teacher_samples"]
    assert d == {"questions": 5, "samples": 15, "single": pytest.approx(8 / 15), "majority": 0.6, "pass_at_k": 1.0}
    assert s["voting"]["evals"] == [
        {"stage": "eval_teacher", "model": "teacher", "n": 10, "single": 0.7, "majority": 0.8}
    ]
    assert s["reward_models"]["rm"]["eval_accuracy"] == 0.625 and "| rm | 62.5 | 8 | 72 |" in md
    assert [r["loss"] for r in s["curves"]["teacher"]["rows"]] == [3.0, 2.0, 1.2]
    assert len(s["curves"]["student_rl"]["rows"]) == 5
    assert s["resources"]["teacher"]["wall_s"] > 0 and s["resources"]["teacher"]["max_rss_mb"] >= 100
    assert s["environment"]["git_commit"]


@pytest.mark.slow
def test_html_is_self_contained_with_inline_plots(tiny):
    configs, _ = tiny
    html, _, _ = run_report(configs)
    assert not re.search(r"https?://", html), "the page must not reach the network"
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", html), "only inline data: sources"
    images = re.findall(r'<img alt="(\w+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert {name for name, _ in images} == {"accuracy", "sft_curve", "reward_model_curve", "rl_curve"}
    import base64

    assert all(base64.b64decode(data).startswith(b"\x89PNG") for _, data in images)


@pytest.mark.slow
def test_same_inputs_same_report_and_times_stay_apart(tiny):
    configs, inputs = tiny
    html1, md1, s1 = run_report(configs)
    html2, md2, s2 = run_report(configs)
    assert md1 == md2 and html1 == html2 and s1 == s2
    for key in (k for k in inputs if k.endswith("_benchmark")):  # another run's times
        write(inputs[key], TSV_HEAD + "99.5\t0:01:39\t777\t1\t1\t1\t0\t0\t1\t42\n")
    _, md3, _ = run_report(configs)
    assert md3 != md1 and ENV_MARKER in md1
    assert md3.split(ENV_MARKER)[0] == md1.split(ENV_MARKER)[0]
    assert md3.split("## Time")[0] == md1.split("## Time")[0]  # the cut tests/test_pipeline.py makes
    assert md1.index("## Time") > md1.index(ENV_MARKER) > md1.index("## Provenance")
    assert "99.5" not in md1.split(ENV_MARKER)[0] and "99.5" in md3.split(ENV_MARKER)[1]


@pytest.mark.slow
def test_missing_outputs_say_not_run(tiny):
    configs, inputs = tiny
    for key in (
        "eval_rl_metrics",
        "eval_rl_samples",
        "student_rl_log",
        "rm_metrics",
        "rewards_labels",
        "eval_sft_samples",
        "teacher_samples_responses",
        "teacher_benchmark",
    ):
        Path(inputs[key]).unlink()
    shutil.rmtree(inputs["student_sft_model"])
    html, md, s = run_report(configs)
    acc = {a["stage"]: a for a in s["accuracy"]}
    assert acc["eval_rl"]["status"] == "not run" and acc["eval_sft"]["accuracy"] == 0.5
    assert "| eval_rl | rl | not run |" not in md and re.search(
        r"\| eval_rl \| RL student \(learned RM\) \| not run \|", md
    )
    assert {(c["a"], c["b"]) for c in s["comparisons"]} == {("eval_student", "eval_teacher")}
    assert s["pseudo_labels"]["rewards"] == {"status": "not run"} and s["reward_models"]["rm"] is None
    assert s["curves"]["student_rl"] is None and s["curves"]["student_sft"] is None
    assert s["voting"]["distill"] == {} and s["resources"]["teacher"] is None
    assert md.count("not run") >= 6 and "not run" in html
    assert 'alt="rl_curve"' not in html and 'alt="accuracy"' in html


@pytest.mark.slow
def test_spec_without_distillation_stages(built):
    """A spec that only evaluates a model: every other section says not run."""
    configs = built(
        {
            "name": "bare",
            "task": {"synthetic": {"distill_size": 4, "test_size": 4, "gold_size": 0, "dev_size": 0}},
            "models": {"m": {"init": {"hidden_size": 16, "num_layers": 1, "num_heads": 2}}},
            "stages": {"ev": {"kind": "eval", "model": "m"}},
        }
    )
    report.main(["--config", str(configs["report"]), "--threads", "1"])
    md = Path("runs/bare/report/report.md").read_text()
    for title in (
        "Accuracy",
        "Paired comparisons",
        "Pseudo-label quality",
        "Reward model",
        "Training curves",
        "Sample responses",
    ):
        section = md.split(f"## {title}")[1].split("\n## ")[0]
        assert "not run" in section, title


# ----------------------------------------------------------------------------- snakemake --report
def snakemake_report_rule(workflow: Path) -> None:
    """What the lead's rule.smk.j2 change should produce: the report rule's outputs wrapped in report()."""
    text = workflow.read_text()
    rule = text[text.index("rule report:") :]
    wrapped = re.sub(
        r'(\w+)=("runs/[^"]+/report/report\.(html|md)"),',
        r'\1=report(\2, category="distillc", labels={"file": "\1"}),',
        rule,
    )
    workflow.write_text(text.replace(rule, wrapped))


@pytest.mark.slow
def test_snakemake_report_embeds_the_page(tiny, tmp_path):
    shutil.copy(REPO / "Snakefile", tmp_path / "Snakefile")
    snakemake_report_rule(tmp_path / "build/tiny/workflow.smk")
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }  # a worktree's checkout, not the installed one
    # --allowed-rules: the fake upstream outputs count as given; only the report rule runs.
    run = subprocess.run(
        [str(BIN / "snakemake"), "runs/tiny/report/report.html", "--cores", "1", "--allowed-rules", "report"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rep = subprocess.run(
        [str(BIN / "snakemake"), "--report", "snake.zip"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rep.returncode == 0, rep.stderr[-3000:]
    archive = zipfile.ZipFile(tmp_path / "snake.zip")
    embedded = {Path(n).name: archive.read(n) for n in archive.namelist() if "/data/raw/" in n}
    for name in ("report.html", "report.md"):  # the files themselves, byte for byte
        assert embedded.get(name) == (tmp_path / "runs/tiny/report" / name).read_bytes(), sorted(embedded)


# ----------------------------------------------------------------------------- a real browser
CHECK = """<script>window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.insertAdjacentHTML("beforeend", `<p id="imgcheck">images ${imgs.length} loaded ${ok}</p>`);
});</script>"""


def chromium(*args, cwd) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium): browser check skipped")
    return subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--user-data-dir=" + str(cwd / "profile"),
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_page_renders_in_a_headless_browser(tiny, tmp_path):
    configs, _ = tiny
    html, _, _ = run_report(configs)
    page = Path("runs/tiny/report/report.html").resolve()
    probe = tmp_path / "probe.html"  # a test-only copy with a script that reports on the images
    probe.write_text(html.replace("</body>", CHECK + "\n</body>"))
    dom = chromium("--dump-dom", probe.as_uri(), cwd=tmp_path)
    found = re.search(r"images (\d+) loaded (\d+)", dom.stdout)
    assert found, dom.stderr[-2000:]
    assert int(found[1]) == 4 and found[1] == found[2], found[0]
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,3000", "--hide-scrollbars", page.as_uri(), cwd=tmp_path)
    assert shot.is_file(), "chromium wrote no screenshot"
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels[..., :3].std() > 0.05 and (pixels[..., :3] < 0.5).mean() > 0.005, "blank screenshot"


# ----------------------------------------------------------------------------- the page's layout
STAGES = ["eval_teacher", "eval_teacher_sampled", "eval_student", "eval_rl_majority", "eval_sft", "eval_sft_all"]
LABELS = [
    "teacher",
    "teacher, one sample at T=1",
    "base student",
    "RL student (majority-vote reward)",
    "SFT student",
    "SFT student (all teacher samples)",
]


def label_boxes(fig) -> tuple[list, object]:
    """The window boxes of every y tick label (both sides) of a drawn figure, and the figure's box."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()  # constrained layout places the labels when drawn
    renderer = fig.canvas.get_renderer()
    axes = [*fig.axes, *(c for a in fig.axes for c in a.child_axes)]  # the right axis is a child
    labels = [t for a in axes for t in [*a.get_xticklabels(), *a.get_yticklabels()] if t.get_text()]
    return [t.get_window_extent(renderer) for t in labels], fig.bbox


def overlapping(boxes) -> list[tuple[int, int]]:
    return [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes) if i < j and a.overlaps(b)]


def test_bar_labels_never_overlap_and_rows_grow_the_figure():
    """The accuracy plot's helper: 12 rows of long eval names, each label clear of every other and
    inside the figure. The same names under vertical bars (the old plot) do run into each other."""
    from matplotlib.figure import Figure

    from runtime.reporting.format import hbars

    names = [f"{LABELS[i % 6]} [{STAGES[i % 6]}{'' if i < 6 else '__seed_1'}]" for i in range(12)]
    values = [10.0 + 7 * i for i in range(12)]
    fig = hbars(
        names,
        values,
        [(v - 4, v + 4) for v in values],
        right=[f"{v:.1f} [{v - 4:.1f}, {v + 4:.1f}]" for v in values],
        title="Accuracy per eval",
        xlabel="accuracy %",
    )
    boxes, page = label_boxes(fig)
    assert len(boxes) == 12 + 12 + 6  # left names, right numbers, the x axis's 0..100
    assert overlapping(boxes) == []
    assert all(page.x0 <= b.x0 and b.x1 <= page.x1 and page.y0 <= b.y0 and b.y1 <= page.y1 for b in boxes)
    taller = hbars(names * 2, values * 2, title="t", xlabel="x")
    assert taller.get_figheight() > 1.8 * fig.get_figheight() - 1.5 and taller.get_figwidth() == fig.get_figwidth()

    old = Figure(figsize=(7, 3.2), layout="constrained")  # the bar chart this replaced
    old.subplots().bar(STAGES, values[:6])
    assert overlapping(label_boxes(old)[0]), "the check cannot fail: the old plot's names should overlap"


def test_bar_helper_draws_groups_and_dots():
    """What the sweep's plot asks of the helper: a colour and a legend entry per group, a dot per seed."""
    from runtime.reporting.format import hbars

    fig = hbars(
        ["eval_sft", "eval_sft", "eval_rl", "eval_rl"],
        [40.0, 45.0, 50.0, 55.0],
        [(35.0, 45.0), (None, None), (45.0, 55.0), (50.0, 60.0)],
        dots=[[38.0, 42.0], [44.0, 46.0], [49.0], []],
        groups=["lr=1e-4", "lr=3e-4", "lr=1e-4", "lr=3e-4"],
        title="Accuracy per stage and setting",
        xlabel="accuracy %",
    )
    ax = fig.axes[0]
    bars = ax.patches
    assert [round(b.get_width()) for b in bars] == [40, 45, 50, 55]
    assert bars[0].get_facecolor() == bars[2].get_facecolor() != bars[1].get_facecolor()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["lr=1e-4", "lr=3e-4"]
    from matplotlib.collections import PathCollection

    assert sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)) == 5  # the dots
    assert overlapping(label_boxes(fig)[0]) == []


# Evals whose names and labels are long (eval_rl_majority vs eval_teacher_sampled, "RL student
# (majority-vote reward) vs teacher, one sample at T=1"): with them, the old page's pairwise table
# ran past a 1300-pixel window.
RUNG = {"kind": "rl", "policy": "student_sft", "algorithm": "rloo", "response_length": 24}
WIDE = {
    "student_rl_majority": RUNG | {"reward": "majority", "votes": "teacher_votes"},
    "student_rl_gold": RUNG | {"reward": "gold"},
    "eval_teacher_sampled": {
        "kind": "eval",
        "model": "teacher",
        "samples": 4,
        "temperature": 1.0,
        "max_new_tokens": 24,
    },
    "eval_rl_majority": {"kind": "eval", "model": "student_rl_majority", "max_new_tokens": 24},
    "eval_rl_gold": {"kind": "eval", "model": "student_rl_gold", "max_new_tokens": 24},
}
PROBE = """<script>window.addEventListener("load", () => {
  document.querySelectorAll("details").forEach(d => { d.open = true; });  // the folded tables count too
  const root = document.documentElement;
  const out = {
    window: window.innerWidth, client: root.clientWidth, scroll: root.scrollWidth,
    tables: Array.from(document.querySelectorAll("table")).map(t => t.getBoundingClientRect().right),
    headings: Array.from(document.querySelectorAll("h2")).map(h => h.textContent),
  };
  document.body.insertAdjacentHTML("beforeend", `<pre id="probe">${JSON.stringify(out)}</pre>`);
});</script>"""


@pytest.fixture
def wide(built):
    spec = yaml.safe_load((REPO / "tests" / "report_spec.yaml").read_text())
    spec["stages"] = {k: v for k, v in spec["stages"].items() if k != "report"} | WIDE | {"report": {"kind": "report"}}
    configs = built(spec)
    inputs = fake_run(configs)
    cfg = load_config(configs["report"], "report")
    targets = [r["target"] for r in gold(cfg.task, "test", cfg.spec_seed)[:10]]
    for i, sid in enumerate(k for k, v in WIDE.items() if v["kind"] == "eval"):
        fake_eval(inputs, sid, targets, [int(q % (i + 2) > 0) for q in range(10)])
    return configs


@pytest.mark.slow
def test_page_leads_with_the_answer_and_fits_the_window(wide, tmp_path):
    """In a real browser at 1300 and 1000 pixels: no horizontal scrolling, every table (the folded
    one opened) inside the page, and the verdicts' section first."""
    html, md, s = run_report(wide)
    assert len(s["comparisons"]) == 21
    assert "<details><summary>All 21 paired comparisons (" in html  # folded, closed
    assert md.index("## What the comparisons say") < md.index("## Accuracy") < md.index("## Paired comparisons")
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "\n</body>"))
    for width in (1300, 1000):
        dom = chromium("--dump-dom", f"--window-size={width},2000", probe.as_uri(), cwd=tmp_path)
        found = re.search(r'<pre id="probe">(\{.*?\})</pre>', dom.stdout)
        assert found, dom.stderr[-2000:]
        p = json.loads(html_text.unescape(found[1]))
        assert p["window"] == width and p["scroll"] <= p["client"] <= width, p
        assert len(p["tables"]) == html.count("<table>") and max(p["tables"]) <= p["client"], (width, p)
        assert p["headings"][0] == "What the comparisons say", p["headings"]


def test_every_kind_with_a_curve_is_plotted():
    """The page's plots come from the kinds' curve facts: a kind that declares a curve (distill_logits too)
    has a plot, in the training section, fed by its own curve keys; nothing names kinds by hand."""
    from compiler.spec.stages import STAGE_CLASSES
    from runtime.reporting import page as report_page

    with_curve = {k for k, c in STAGE_CLASSES.items() if c.curve is not None}
    assert {"sft", "reward_model", "rl", "distill_logits"} <= with_curve
    summary = {
        "accuracy": [],
        "sweep": None,
        "curves": {
            f"{k}_stage": {
                "kind": k,
                "rows": [{"step": i} | {key: 1.0 / (i + 1) for key in STAGE_CLASSES[k].curve.keys} for i in range(3)],
            }
            for k in with_curve
        },
    }
    plots = report_page.plots(summary)
    assert set(plots) == {report_page.curve_plot(k) for k in with_curve}
    training = report_page.training(summary)
    assert set(training["plots"]) == set(plots)


# ----------------------------------------------------------------------------- cut off, no answer, strict
def test_cut_off_and_no_answer_per_stage_and_strict_beside_flexible(tiny):
    """Stages that counted cut-off and unanswered responses show them; stages from older runs (no
    counts) show nothing, not zero. Strict-match appears beside accuracy where the two differ."""
    configs, inputs = tiny
    write(
        Path(inputs["teacher_samples_responses"]).parent / "generate_stats.json",
        {"questions": 5, "responses": 15, "cut_off": 6, "no_answer": 3},
    )  # 40% cut off, 20% no answer
    metrics = json.loads(Path(inputs["eval_sft_metrics"]).read_text())
    metrics |= {"responses": 10, "cut_off_share": 0.7, "no_answer_share": 0.1}
    metrics["metrics"]["greedy_strict"] = {"accuracy": 0.2, "stderr": 0.1}  # flexible 50%, strict-match 20%
    write(inputs["eval_sft_metrics"], metrics | {"filter": "greedy"})
    stats = json.loads(Path(inputs["rewards_stats"]).read_text())
    write(inputs["rewards_stats"], stats | {"cut_off": {"dropped": 4, "keep_cut_off": False}})
    write(
        Path(inputs["student_sft_model"]).parent / "training_data.json",
        {"rows": 9, "cut_off_dropped": 2, "keep_cut_off": False},
    )
    _, md, s = run_report(configs)
    assert s["cut_off"]["responses"] == [
        {"stage": "teacher_samples", "kind": "generate", "responses": 15, "cut_off": 0.4, "no_answer": 0.2},
        {"stage": "eval_sft", "kind": "eval", "responses": 10, "cut_off": 0.7, "no_answer": 0.1},
    ]
    assert s["cut_off"]["left_out"] == [
        {"stage": "rewards", "kind": "pseudo_reward", "dropped": 4, "keep_cut_off": False},
        {"stage": "student_sft", "kind": "sft", "dropped": 2, "rows": 9, "keep_cut_off": False},
    ]
    section = md.split("## Cut-off and unanswered responses")[1].split("\n## ")[0]
    assert "| teacher_samples | generate | 15 | 40.0 | 20.0 |" in section
    assert "| eval_sft | eval | 10 | 70.0 | 10.0 |" in section
    assert "student_samples" not in section and "eval_teacher" not in section  # not counted: no row, no zero
    assert "| rewards | pseudo_reward | 4 | no |" in section and "| student_sft | sft | 2 | no |" in section
    acc = {a["stage"]: a for a in s["accuracy"]}
    assert acc["eval_sft"]["strict"] == 0.2 and acc["eval_teacher"]["strict"] is None
    assert "strict-match %" in md and "| 50.0 | [23.7, 76.3] | n/a | 20.0 |" in md


def test_old_runs_show_no_cut_off_counts(tiny):
    configs, _ = tiny
    _, md, s = run_report(configs)
    assert s["cut_off"] == {"responses": [], "left_out": []}
    assert "not run: no stage of this run counted" in md and "strict-match %" not in md
