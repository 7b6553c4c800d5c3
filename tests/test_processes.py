"""Training stages in several processes (`resources.processes`): validation, the rendered launcher, and
real runs: every training kind at 2 CPU processes (gloo) under `distillc run`, and a kill -9 mid-stage.

The run tests drive the real CLI and Snakemake. Which process wrote what is read from an audit
hook (a sitecustomize.py on PYTHONPATH): every rename into runs/ (atomic files, model folders)
is recorded with the RANK of the process that made it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, build_spec, synthetic_task
from runtime.lib import launch

BIN = Path(sys.executable).parent
TRAINS = ("teacher", "student_sft", "rm", "rl_grpo", "rl_rloo", "rl_ppo", "gkd")  # every kind, rl thrice
TWO = {"resources": {"processes": 2}}


def tiny_at(processes: int | None) -> dict:
    """specs/tiny.yaml with `processes` on every training stage (None: unset)."""
    spec = yaml.safe_load((REPO / "specs" / "tiny.yaml").read_text())
    for st in spec["stages"].values():
        if st["kind"] in ("sft", "reward_model", "rl", "distill_logits") and processes is not None:
            st["resources"] = {"processes": processes}
    return spec


def built_files(root: Path, spec: dict) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    build_spec(spec, root)
    build = root / "build" / spec["name"]
    return {str(p.relative_to(build)): p.read_text() for p in build.rglob("*") if p.is_file()}


# ------------------------------------------------------------------ compiling (fast)
def test_processes_one_or_unset_render_todays_rules(tmp_path):
    """Unset, or 1, renders what the renderer rendered before the field existed: `-m`, and the kind's threads.
    (Every shipped spec was also built before and after: stages/, workflow.smk and resources.json unchanged.)"""
    unset = built_files(tmp_path / "a", tiny_at(None))
    one = built_files(tmp_path / "b", tiny_at(1))
    for f in unset:
        if f not in ("spec.lock.json", "env.yaml") and not f.startswith("lm_eval/"):  # these name the root
            assert unset[f] == one[f], f
    jobs = json.loads(unset["resources.json"])
    assert {j["launch"] for j in jobs.values()} == {"-m"}
    assert jobs["student_sft"]["threads"] == 1


def test_two_processes_render_the_cpu_launcher_and_leave_the_stage_config(tmp_path):
    """The rule starts runtime.lib.launch with 2 processes and 2 cores; the stage config is unchanged (a
    rule parameter, the launch line, is what reruns the stage)."""
    one = built_files(tmp_path / "a", tiny_at(None))
    two = built_files(tmp_path / "b", tiny_at(2))
    assert {f for f in one if f.startswith("stages/") and one[f] != two[f]} == set()
    jobs = json.loads(two["resources.json"])
    trains = {"teacher", "student_sft", "rm", "student_rl", "student_rl_majority", "student_rl_gold", "student_gkd"}
    for sid, job in jobs.items():
        if sid in trains:
            assert job["launch"] == "-m runtime.lib.launch --processes 2", sid
            assert job["threads"] == 2 and job["resources"]["cpus_per_task"] == 2, sid
        else:
            assert job["launch"] == "-m" and job["threads"] == 1, sid
    rule = '"{params.python} {params.launch} runtime.sft --config {input.config} --threads {threads}'
    assert rule in two["workflow.smk"]  # the same rule text: the launcher comes in through params.launch


def test_on_gpus_the_processes_follow_the_gpus(tmp_path):
    spec = tiny_at(None)
    spec["stages"]["student_sft"]["resources"] = {"gpus": 2}
    spec["stages"]["rm"]["resources"] = {"gpus": 2, "processes": 2}
    jobs = json.loads(built_files(tmp_path, spec)["resources.json"])
    for sid in ("student_sft", "rm"):
        assert jobs[sid]["launch"] == "-m accelerate.commands.launch --multi_gpu --num_processes 2 -m"
        assert jobs[sid]["threads"] == 1  # as before: cpus do not follow GPU processes


def test_the_launcher_splits_the_threads_and_tells_each_process_its_rank():
    args = ["--config", "c.yaml", "--threads", "5", "--progress-fd", "3"]
    assert launch.split_threads(args, 2) == (["--config", "c.yaml", "--threads", "2", "--progress-fd", "3"], 2)
    assert launch.split_threads(["--threads", "1"], 2) == (["--threads", "1"], 1)  # never 0
    env = launch.worker_env(1, 2, "/tmp/x/store", 2)
    assert (env["RANK"], env["WORLD_SIZE"], env["OMP_NUM_THREADS"], env["CUDA_VISIBLE_DEVICES"]) == ("1", "2", "2", "")


def test_dev_accuracy_in_several_processes_counts_every_question_once(monkeypatch):
    """Each process answers every N-th dev question; the hits are summed over the processes."""
    from runtime import sft
    from runtime.lib import ranks

    seen: list[list[int]] = []

    def greedy(model, tok, task, rows, max_new_tokens, batch):
        seen.append([r["id"] for r in rows])
        return sum(r["ok"] for r in rows) / len(rows)

    monkeypatch.setattr(sft, "greedy_accuracy", greedy)
    monkeypatch.setattr(ranks, "world", lambda: 2)
    monkeypatch.setattr(ranks, "rank", lambda: 1)
    monkeypatch.setattr(ranks, "total", lambda values: [values[0] + 3])  # rank 0 got 3 right
    dev = [{"id": i, "ok": i in (1, 3)} for i in range(7)]
    assert sft.dev_accuracy(None, None, None, dev, 8) == (2 + 3) / 7
    assert seen == [[1, 3, 5]]


WORKER = """
import os, sys, time
from runtime.lib import ranks
ranks.join()
import torch
out = os.environ["OUT"]
with open(os.path.join(out, f"rank{ranks.rank()}"), "w") as fh:
    fh.write(f"{os.getpid()} {sys.argv[1:]} {os.environ['OMP_NUM_THREADS']} {torch.get_num_threads()} "
             f"{ranks.total([ranks.rank() + 1])[0]}")
if os.environ["MODE"] == "fail" and ranks.rank() == 1:
    sys.exit(3)
time.sleep(0 if os.environ["MODE"] == "ok" else 600)
"""


def start_workers(tmp_path: Path, mode: str) -> subprocess.Popen:
    (tmp_path / "worker_mod.py").write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}", "OUT": str(tmp_path), "MODE": mode}
    cmd = [sys.executable, "-m", "runtime.lib.launch", "--processes", "2", "worker_mod", "--threads", "2"]
    return subprocess.Popen(cmd, env=env, start_new_session=True)


def worker_pids(tmp_path: Path, timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    while not all((tmp_path / f"rank{r}").exists() for r in (0, 1)):
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.1)
    time.sleep(0.2)
    return [int((tmp_path / f"rank{r}").read_text().split()[0]) for r in (0, 1)]


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.slow
def test_launched_processes_meet_and_end_together(tmp_path):
    """Two processes join (a collective sums their ranks), get a thread each; one failing stops the other and
    the launcher exits with its code; the launcher killed alone (kill -9) takes its workers with it."""
    (tmp_path / "ok").mkdir()
    assert start_workers(tmp_path / "ok", "ok").wait(120) == 0
    said = (tmp_path / "ok" / "rank1").read_text().split(" ", 1)[1]
    assert said == "['--threads', '1'] 1 1 3.0", said  # thread split; the sum 1 + 2 came through gloo

    (tmp_path / "fail").mkdir()
    failing = start_workers(tmp_path / "fail", "fail")
    assert failing.wait(120) == 3
    assert all(gone(pid) for pid in worker_pids(tmp_path / "fail"))

    (tmp_path / "kill").mkdir()
    held = start_workers(tmp_path / "kill", "hold")
    pids = worker_pids(tmp_path / "kill")
    held.send_signal(signal.SIGKILL)  # the launcher alone: its workers are not in a session of their own
    held.wait()
    deadline = time.monotonic() + 10
    while not all(gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(p) for p in pids), "a worker outlived its launcher"


WHITEN_WORKER = """
import os
import torch
from runtime.lib import ranks
from runtime.rl import rollout_whiten
ranks.join()
torch.manual_seed(0)  # the same rollout in both processes; each whitens its own rows of it
values, mask = torch.randn(8, 12) * 3 + 1, torch.rand(8, 12) > 0.3
mine = slice(4 * ranks.rank(), 4 * ranks.rank() + 4)
out = [rollout_whiten(values[mine], mask[mine]), rollout_whiten(values[mine], mask[mine], shift_mean=False)]
torch.save(out, os.path.join(os.environ["OUT"], f"rank{ranks.rank()}.pt"))
"""


@pytest.mark.slow
def test_ppo_in_two_processes_whitens_advantages_over_the_whole_rollout(tmp_path):
    """Each of 2 processes whitens its half of a rollout with runtime.rl.rollout_whiten: together they give what
    TRL's masked_whiten gives the whole rollout in one process, which TRL's per-process whitening does not."""
    import torch
    from trl.experimental.ppo.ppo_trainer import masked_whiten

    (tmp_path / "whiten_mod.py").write_text(WHITEN_WORKER)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}", "OUT": str(tmp_path)}
    cmd = [sys.executable, "-m", "runtime.lib.launch", "--processes", "2", "whiten_mod", "--threads", "2"]
    assert subprocess.run(cmd, env=env, timeout=300).returncode == 0
    halves = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    torch.manual_seed(0)
    values, mask = torch.randn(8, 12) * 3 + 1, torch.rand(8, 12) > 0.3
    for i, shift in enumerate((True, False)):
        together = torch.cat([h[i] for h in halves])
        one = masked_whiten(values, mask, shift_mean=shift)
        assert torch.allclose(together[mask], one[mask], atol=1e-5), shift
        apart = torch.cat([masked_whiten(values[r * 4 : r * 4 + 4], mask[r * 4 : r * 4 + 4], shift) for r in (0, 1)])
        assert not torch.allclose(apart[mask], one[mask], atol=1e-2)  # what TRL alone would do in 2 processes


# ------------------------------------------------------------------ running (slow)
AUDIT = """
import json, os, sys
_LOG = os.environ["DISTILLC_TEST_RENAMES"]
def _hook(event, args):
    if event == "os.rename" and not isinstance(args[1], int):
        with open(_LOG, "a") as fh:
            fh.write(json.dumps({"rank": os.environ.get("RANK"), "to": os.path.abspath(os.fsdecode(args[1]))}) + "\\n")
sys.addaudithook(_hook)
"""


def procs_spec() -> dict:
    """A shrunk tiny: every training kind at 2 processes (rl as grpo, rloo and ppo), and a 1-process twin
    of the teacher with the doubled per-device batch, i.e. the same batch per step."""
    sft = {"kind": "sft", "data": "gold", "max_steps": 40, "learning_rate": 3.0e-3, "eval_every_steps": 20}
    rl = {"kind": "rl", "policy": "student_sft", "episodes": 64, "batch_size": 16, "response_length": 12}
    return {
        "name": "procs",
        "seed": 0,
        "task": synthetic_task(gold_size=200, dev_size=16),
        "models": {
            "teacher_base": {"init": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 64}},
            "student": {"init": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 64}},
        },
        "stages": {
            "teacher": {**sft, "model": "teacher_base", "batch_size": 16, "save_every_steps": 20, **TWO},
            "teacher_one": {**sft, "model": "teacher_base", "batch_size": 32},
            "samples": {
                "kind": "generate",
                "model": "teacher",
                "temperatures": [1.0],
                "samples_per_temperature": 4,
                "max_new_tokens": 16,
            },
            "votes": {"kind": "pseudo_reward", "teacher": "samples"},
            "student_sft": {
                "kind": "sft",
                "model": "student",
                "data": "votes",
                "max_steps": 10,
                "batch_size": 8,
                "keep_cut_off": True,
                **TWO,
            },
            "rm": {
                "kind": "reward_model",
                "data": "votes",
                "model": "student",
                "max_steps": 10,
                "batch_size": 8,
                **TWO,
            },
            "rl_grpo": {**rl, "reward": "majority", "votes": "votes", "algorithm": "grpo", **TWO},
            "rl_rloo": {**rl, "reward_model": "rm", "algorithm": "rloo", **TWO},
            "rl_ppo": {**rl, "reward_model": "rm", "algorithm": "ppo", **TWO},
            "gkd": {
                "kind": "distill_logits",
                "teacher": "teacher",
                "model": "student",
                "data": "votes",
                "max_steps": 10,
                "batch_size": 8,
                "max_new_tokens": 12,
                "keep_cut_off": True,
                **TWO,
            },
        },
    }


def run_env(root: Path) -> dict:
    (root / "audit").mkdir()
    (root / "audit" / "sitecustomize.py").write_text(AUDIT)
    return {**os.environ, "PYTHONPATH": f"{root / 'audit'}:{REPO}", "DISTILLC_TEST_RENAMES": str(root / "renames")}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The procs spec, run once by `distillc run --cores 2`: (root, Snakemake's terminal output)."""
    root = tmp_path_factory.mktemp("procs")
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    (root / "procs.yaml").write_text(yaml.safe_dump(procs_spec(), sort_keys=False))
    env = run_env(root)
    assert subprocess.run([str(BIN / "distillc"), "build", "procs.yaml"], cwd=root, env=env).returncode == 0
    done = subprocess.run(
        [str(BIN / "distillc"), "run", "--cores", "2"], cwd=root, env=env, capture_output=True, text=True, timeout=900
    )
    (root / "terminal.txt").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return root, done.stdout + done.stderr


@pytest.mark.slow
def test_every_training_kind_finishes_in_two_processes_with_a_thread_each(ran):
    root, _ = ran
    for sid in TRAINS:
        log = (root / "runs/procs/logs" / f"{sid}.log").read_text()
        assert "2 processes, 1 thread(s) each" in log, sid
        assert (root / "runs/procs" / sid / "model" / "config.json").exists(), sid


@pytest.mark.slow
def test_every_output_is_written_once_by_rank_0(ran):
    """No file under runs/ was renamed into place by a rank other than 0 (checkpoints aside: each rank adds
    its RNG state there, as the Trainer does), and each model folder of a 2-process stage came once."""
    root, _ = ran
    renames = [json.loads(line) for line in (root / "renames").read_text().splitlines()]
    runs = str(root / "runs" / "procs")
    into_runs = [r for r in renames if r["to"].startswith(runs) and "/checkpoints/" not in r["to"]]
    by_rank = {r["rank"] for r in into_runs}
    assert by_rank <= {None, "0"} and "0" in by_rank, by_rank
    for sid in TRAINS:
        made = [r for r in into_runs if r["to"] == f"{runs}/{sid}/model"]
        assert [r["rank"] for r in made] == ["0"], (sid, made)
        progress = [r for r in into_runs if r["to"] == f"{runs}/{sid}/progress.json"]
        assert progress and {r["rank"] for r in progress} == {"0"}, sid


@pytest.mark.slow
def test_progress_and_log_lines_read_as_one_stage(ran):
    """The terminal shows each stage started once, its step counts rising once each, done once; its log
    the same (rank 0 speaks for the stage); `distillc status` one done row per stage."""
    root, terminal = ran
    lines = terminal.splitlines()
    for sid in TRAINS:
        mine = [line for line in lines if line.startswith(f"[{sid}] ")]
        assert sum(" started" in line for line in mine) == 1 and sum(" done in " in line for line in mine) == 1, mine
        counts = [int(m.group(1)) for line in mine if (m := re.match(rf"\[{sid}\] (\d+)/\d+ steps", line))]
        assert counts and counts == sorted(set(counts)), (sid, counts)
        log = (root / "runs/procs/logs" / f"{sid}.log").read_text()
        logged = re.findall(r"\] progress: (\d+)/\d+ steps", log)
        assert len(re.findall(r"\] \w+ stage '", log)) == 1, sid
        assert logged and len(logged) <= len(set(logged)) + 1, (sid, logged)  # the last count may repeat (train end)
    steps = re.findall(r"\] step (\d+): reward", (root / "runs/procs/logs/rl_grpo.log").read_text())
    assert steps == ["1", "2", "3", "4"], steps  # 64 episodes / 16 per rollout: once each
    status = subprocess.run([str(BIN / "distillc"), "status"], cwd=root, capture_output=True, text=True).stdout
    rows = re.findall(r"│ (\w+)\s+│ \w+\s+│ (done|running|failed|pending)\s", status)
    assert sorted(sid for sid, _ in rows) == sorted([*procs_spec()["stages"], "report"]), status
    assert {state for _, state in rows} == {"done"}, status


@pytest.mark.slow
def test_the_batch_of_a_step_is_recorded_and_matches_one_process(ran):
    """Metrics and model cards say the step's batch (per device x processes); rl keeps its rollout batch.
    The 2-process teacher (16 per process) against its 1-process twin (32): the same batches, so the same
    losses up to float order and the padded last batch of an epoch (measured: within 0.2%; allowed 2%)."""
    from huggingface_hub import ModelCard

    root, _ = ran
    run = root / "runs/procs"
    metrics = json.loads((run / "rm/metrics.json").read_text())
    assert (metrics["processes"], metrics["per_device_batch_size"], metrics["effective_batch_size"]) == (2, 8, 16)
    for sid, per_device, step in (("teacher", 16, 32), ("rl_grpo", 8, 16), ("rl_ppo", 8, 16), ("gkd", 8, 16)):
        card = ModelCard.load(run / sid / "model" / "README.md")
        batch = card.data.to_dict()["distillc"]["batch"]
        assert (batch["processes"], batch["per_device_batch_size"], batch["effective_batch_size"]) == (
            2,
            per_device,
            step,
        ), sid
        assert f"- batch: {step} per optimizer step ({per_device} per process x 2 process(es)" in card.text, sid
    ppo = [json.loads(line) for line in (run / "rl_ppo/rl_log.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in ppo] == [16, 32, 48, 64]  # 16 responses per step, as in one process

    def losses(sid: str) -> dict[int, float]:
        rows = [json.loads(line) for line in (run / sid / "model/train_log.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if "loss" in r}

    two, one = losses("teacher"), losses("teacher_one")
    assert two.keys() == one.keys() and len(two) >= 8
    assert abs(two[1] - one[1]) < 1e-5 * one[1]  # the first step, before any update: the same rows
    assert max(abs(two[s] - one[s]) / one[s] for s in two) < 0.02, (two, one)


@pytest.mark.slow
def test_changing_processes_reruns_the_stage_and_only_what_follows(ran):
    """The stage config is the same at any count; the rule's launch line (a Snakemake parameter) is not."""
    root, _ = ran
    spec = procs_spec()
    del spec["stages"]["gkd"]["resources"]
    (root / "procs.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    try:
        assert subprocess.run([str(BIN / "distillc"), "build", "procs.yaml"], cwd=root).returncode == 0
        dry = subprocess.run(
            [str(BIN / "snakemake"), "-n", "--cores", "2"], cwd=root, capture_output=True, text=True, timeout=300
        ).stdout
        assert set(re.findall(r"^rule (\w+):", dry, re.M)) == {"gkd", "report", "all"}, dry
        assert "Params have changed since last execution" in dry, dry
    finally:
        (root / "procs.yaml").write_text(yaml.safe_dump(procs_spec(), sort_keys=False))
        subprocess.run([str(BIN / "distillc"), "build", "procs.yaml"], cwd=root)


@pytest.mark.slow
def test_a_killed_run_resumes_its_two_process_stage_with_the_same_command(tmp_path):
    """kill -9 of the whole `distillc run` after the 2-process stage wrote a checkpoint: no process is left,
    `distillc status` had shown the stage running with its steps, and the same command resumes and finishes."""
    spec = {
        "name": "kill",
        "seed": 0,
        "task": {"synthetic": {"min_steps": 1, "max_steps": 1, "max_number": 9, "gold_size": 200, "dev_size": 0}},
        "models": {"base": {"init": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_length": 64}}},
        "stages": {
            "teacher": {
                "kind": "sft",
                "model": "base",
                "data": "gold",
                "max_steps": 200,
                "batch_size": 16,
                "save_every_steps": 10,
                **TWO,
            }
        },
    }
    shutil.copy(REPO / "Snakefile", tmp_path / "Snakefile")
    (tmp_path / "kill.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    distillc = str(BIN / "distillc")
    assert subprocess.run([distillc, "build", "kill.yaml"], cwd=tmp_path).returncode == 0
    cmd = [distillc, "run", "--cores", "2", "runs/kill/teacher/model"]
    first = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    ckpts = tmp_path / "runs/kill/teacher/checkpoints"
    try:
        deadline = time.monotonic() + 300
        status = ""
        while not re.search(r"│ teacher\s+│ sft\s+│ running\s+│ [1-9]\d*/200 steps", status):
            assert first.poll() is None and time.monotonic() < deadline, f"the stage never showed its steps:\n{status}"
            status = subprocess.run([distillc, "status"], cwd=tmp_path, capture_output=True, text=True).stdout
        assert len(re.findall(r"│ teacher\s", status)) == 1, status  # one stage, though two processes run it
        while not list(ckpts.glob("checkpoint-*/trainer_state.json")):
            assert first.poll() is None and time.monotonic() < deadline, "the run ended or hung before a checkpoint"
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # kill -9 the whole run, mid-stage
        first.wait()
    time.sleep(1)
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    left = [line for line in ps.splitlines() if str(tmp_path) in line or "build/kill/stages" in line]
    assert not left, left

    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    log = (tmp_path / "runs/kill/logs/teacher.log").read_text()
    resumed = re.search(r"resumed from checkpoint step (\d+) ", log)
    assert resumed and 10 <= int(resumed.group(1)) < 200, log[-2000:]  # not started over, not already done
    rows = [
        json.loads(line) for line in (tmp_path / "runs/kill/teacher/model/train_log.jsonl").read_text().splitlines()
    ]
    assert rows[0]["step"] == 1 and rows[-1]["step"] == 200  # the killed run's rows came back with its checkpoint
    assert not ckpts.exists()  # finished: its checkpoints removed
