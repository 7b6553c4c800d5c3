"""A local-directory (hub-like) model's context is known only at run time: generate, rl and eval
measure the prompts with its tokenizer and config before loading any weights, naming file:line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import build_spec
from runtime.lib import models
from runtime.lib import task

SHORT = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "max_length": 48}


@pytest.fixture
def local_model(tmp_path, monkeypatch):
    """A saved 48-token-context model, and data whose third distill row is far too long for it."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    rows = [
        {"question": f"Tom has {i} apples. How many apples does Tom have now?", "answer": f"#### {i}"}
        for i in range(1, 6)
    ]
    long_row = {"question": "Tom has 3 apples. " * 12 + "How many apples does Tom have now?", "answer": "#### 3"}
    (data / "distill.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2] + [long_row] + rows[2:]))
    (data / "test.jsonl").write_text(
        "".join(json.dumps(r | {"question": r["question"] + " Sure?"}) + "\n" for r in rows)
    )
    spec = {
        "name": "room",
        "task": {"distill": {"path": "data/distill.jsonl"}, "test": {"path": "data/test.jsonl"}},
        "models": {"seed_model": {"init": SHORT}},
        "stages": {"ev": {"kind": "eval", "model": "seed_model", "max_new_tokens": 4}},
    }
    cfg = json.loads(json.dumps(spec))
    configs = build_spec(spec, tmp_path)
    from runtime.lib.common import load_config

    c = load_config(configs["ev"], "eval")
    models.save(*models.load_causal_lm(c.models["model"], c.task, c.spec_seed), tmp_path / "local")
    return tmp_path, cfg


def run_stage(kind: str, config: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"runtime.{kind}", "--config", str(config), "--threads", "1"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_generate_and_rl_refuse_a_prompt_that_does_not_fit_before_loading_weights(local_model):
    root, spec = local_model
    spec["models"] = {"local": {"path": "local"}}
    spec["stages"] = {
        "samples": {"kind": "generate", "model": "local", "max_new_tokens": 8},
        "rl": {
            "kind": "rl",
            "policy": "local",
            "reward": "gold",
            "algorithm": "rloo",
            "batch_size": 4,
            "response_length": 8,
        },
    }
    configs = build_spec(spec, root)  # validate cannot know a path model's tokenizer: it builds
    (root / "local" / "model.safetensors").unlink()  # no weights: the check must come before them
    for kind, sid, what in (("generate", "samples", "max_new_tokens 8"), ("rl", "rl", "response_length 8")):
        proc = run_stage(kind, configs[sid], root)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith(f"distillc: stage '{sid}' ({kind}) failed: ") and "data/distill.jsonl:3: " in line, line
        assert f"with {what} that is" in line and "48-token context" in line, line


def test_prompts_that_fit_pass_the_check(local_model):
    from runtime.lib.context import check_context
    from runtime.lib.common import load_config

    root, spec = local_model
    spec["models"] = {"local": {"path": "local"}}
    spec["stages"] = {"samples": {"kind": "generate", "model": "local", "max_new_tokens": 8, "split": "test"}}
    c = load_config(build_spec(spec, root)["samples"], "generate")
    tok = models.load_tokenizer(c.models["model"], c.task, c.spec_seed)
    check_context(c.models["model"], tok, c.task, task.questions(c.task, "test", c.spec_seed), 8, "max_new_tokens")


def test_the_compilers_prompt_is_what_the_chat_template_renders():
    """compiler.spec.chat.prompt_text (the size check's prompt) equals CHAT_TEMPLATE's rendering, with and
    without a system prompt: the template has one home and the two cannot drift apart."""
    import jinja2

    from compiler.spec.chat import CHAT_TEMPLATE, SPECIAL, prompt_text

    template = jinja2.Environment().from_string(CHAT_TEMPLATE)
    for system in ("", "Solve it."):
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": "1 + 2?"}]
        rendered = template.render(messages=msgs, bos_token=SPECIAL["bos"], eos_token=SPECIAL["eos"])
        assert rendered == prompt_text("1 + 2?", system)
    assert prompt_text("x", "S") == "<s>S Question: x Answer:"
