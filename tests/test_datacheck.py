"""Data checked at validate: the corpus of broken data files in tests/bad_data/ (see its
README), sizes against init models, and the runtime's readers agreeing with validate."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from compiler import cli
from test_load import problems, validate

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "bad_data"
CASES = sorted(CORPUS.glob("*.jsonl"))
SPLITS = ("gold", "dev", "distill", "test")
DATA_LINE = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+): (?P<field>task\.\w+): (?P<message>.*)$")


def spec_text(fmt: str, files: dict[str, str], models: str = "", stages: str = "") -> str:
    paths = "".join(f"  {s}: {{path: {files[s]}}}\n" for s in SPLITS)
    return (
        f"name: data_case\ntask:\n  format: {fmt}\n{paths}"
        "models:\n  base: {init: {hidden_size: 16, num_layers: 1, num_heads: 2, max_length: 256}}\n"
        + models
        + "stages:\n  teacher: {kind: sft, model: base, data: gold, stop_at_dev_accuracy: 0.5}\n"
        "  samples: {kind: generate, model: teacher}\n  ev: {kind: eval, model: teacher}\n" + stages
    )


def setup_case(tmp: Path, fmt: str, split: str | None = None, case: Path | None = None) -> Path:
    """The valid files of `fmt` in `tmp`, with `case` standing in for `split`; returns the spec."""
    files = {}
    for s in SPLITS:
        shutil.copy(CORPUS / "valid" / fmt / f"{s}.jsonl", tmp / f"{s}.jsonl")
        files[s] = f"{s}.jsonl"
    if case is not None:
        shutil.copy(case, tmp / case.name)
        files[split] = case.name
    spec = tmp / "spec.yaml"
    spec.write_text(spec_text(fmt, files))
    return spec


def expectations(case: Path) -> tuple[str, str, list[tuple[int, list[str]]]]:
    split, fmt, expected = None, "gsm8k", []
    for line in (case.parent / (case.name + ".expect")).read_text().splitlines():
        key, _, rest = line.partition(":")
        if key == "split":
            split = rest.strip()
        elif key == "format":
            fmt = rest.strip()
        elif key == "expect":
            number, *fragments = shlex.split(rest)
            expected.append((int(number), fragments))
    assert split in SPLITS and expected, f"{case.name}.expect needs a split and expect lines"
    return split, fmt, expected


def data_problems(err: str) -> list[dict]:
    """`file:line: task.<split>: message` lines, each with its indented got/hint lines."""
    return problems(err, DATA_LINE)


def test_corpus_is_large_and_varied():
    assert len(CASES) >= 30
    assert {expectations(c)[0] for c in CASES} == set(SPLITS)
    assert {expectations(c)[1] for c in CASES} == {"gsm8k", "multiple_choice"}


@pytest.mark.parametrize("fmt", ["gsm8k", "multiple_choice"])
def test_the_valid_data_validates(fmt, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = validate(setup_case(tmp_path, fmt), capsys)
    assert (code, err) == (0, ""), err
    assert "ok (4 stages)" in out


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_bad_data(case, tmp_path, monkeypatch, capsys):
    """Refused with exit 2, every expected `file:line: task.<split>:` problem and nothing else, no traceback."""
    monkeypatch.chdir(tmp_path)
    split, fmt, expected = expectations(case)
    code, out, err = validate(setup_case(tmp_path, fmt, split, case), capsys)
    assert code == 2 and out == "", err
    assert "Traceback" not in err and "internal error" not in err, err
    found = data_problems(err)
    assert err.startswith(f"{len(found)} problem{'s' if len(found) != 1 else ''} in data:\n"), err
    for p in found:
        assert p["file"] == case.name and p["field"] == f"task.{split}", err
        assert "\n    hint: " in p["text"], f"no hint:\n{p['text']}"
    for line, fragments in expected:
        hits = [p for p in found if int(p["line"]) == line]
        assert any(all(f in p["text"] for f in fragments) for p in hits), (
            f"{fragments} not reported at {case.name}:{line}:\n{err}"
        )
    assert len(found) == len(expected), f"expected {len(expected)} problems, got {len(found)}:\n{err}"


def test_overlap_is_allowed_when_the_spec_opts_in(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = setup_case(tmp_path, "gsm8k", "test", CORPUS / "test_overlaps_distill.jsonl")
    assert validate(spec, capsys)[0] == 2
    spec.write_text(spec.read_text().replace("  format: gsm8k\n", "  format: gsm8k\n  allow_test_overlap: true\n"))
    code, out, err = validate(spec, capsys)
    assert (code, err) == (0, ""), err


def test_limit_reads_only_the_rows_a_run_reads(tmp_path, monkeypatch, capsys):
    """`limit: N` quick trials on a big file: rows past N are neither read nor judged."""
    monkeypatch.chdir(tmp_path)
    spec = setup_case(tmp_path, "gsm8k", "test", CORPUS / "not_json.jsonl")  # line 2 is broken
    spec.write_text(spec.read_text().replace("{path: not_json.jsonl}", "{path: not_json.jsonl, limit: 1}"))
    code, out, err = validate(spec, capsys)
    assert (code, err) == (0, ""), err


def test_build_refuses_bad_data_too(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = setup_case(tmp_path, "gsm8k", "distill", CORPUS / "empty_file.jsonl")
    assert cli.main(["build", str(spec)]) == 2
    assert "empty_file.jsonl:1: task.distill: the file holds no rows" in capsys.readouterr().err
    assert not (tmp_path / "build").exists()


# ----------------------------------------------------------------------------- sizes
def test_a_huge_question_is_refused_with_its_place_and_count(tmp_path, monkeypatch, capsys):
    """The issue's 31k-token question: named by file:line at validate, before any model loads."""
    monkeypatch.chdir(tmp_path)
    spec = setup_case(tmp_path, "gsm8k")
    with open(tmp_path / "distill.jsonl", "a") as fh:
        fh.write(json.dumps({"question": "word " * 31000 + "How many?"}) + "\n")
    code, out, err = validate(spec, capsys)
    assert code == 2, err
    assert re.search(
        r"stages\.samples\.max_new_tokens: the longest prompt \(distill\.jsonl:7\) has 31008 tokens; "
        r"with max_new_tokens 96 that is 31104, more than the context of model \"base\" \(max_length 256\)",
        err,
    ), err
    assert "hint: shorten that question, or raise models.base.init.max_length" in err


def test_new_tokens_beyond_context_and_rl_batch_beyond_questions(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = setup_case(tmp_path, "gsm8k")
    text = spec.read_text().replace("max_length: 256", "max_length: 64")
    text = text.replace("{kind: eval, model: teacher}", "{kind: eval, model: teacher, max_new_tokens: 24}")
    spec.write_text(
        text + "  votes: {kind: pseudo_reward, teacher: samples}\n"
        "  rm: {kind: reward_model, data: votes, model: base}\n"
        "  rl: {kind: rl, policy: teacher, reward_model: rm, batch_size: 7, response_length: 41}\n"
        "  rl_group: {kind: rl, policy: teacher, reward: gold, algorithm: rloo, batch_size: 28,\n"
        "             num_generations: 4, response_length: 8}\n"
    )
    code, out, err = validate(spec, capsys)
    assert code == 2, err
    # a distill prompt is 24 tokens: 24 + 96 > 64 (generate), 24 + 41 > 64 (rl); eval's 24 + 24 fits
    assert "stages.samples.max_new_tokens: the longest prompt (distill.jsonl:1) has 24 tokens" in err
    assert "hint: lower max_new_tokens to 40, or raise models.base.init.max_length" in err
    assert (
        "stages.rl.response_length: the longest prompt (distill.jsonl:1) has 24 tokens; with response_length 41" in err
    )
    assert "stages.rl.batch_size: batch_size 7 needs 7 questions per rollout, more than the 6 distill" in err
    # rloo samples 4 per question: 28 responses are 7 questions
    assert "stages.rl_group.batch_size: batch_size 28 needs 7 questions per rollout, more than the 6 distill" in err
    assert "stages.ev" not in err
    assert err.startswith("4 problems in spec:"), err


def test_synthetic_sizes_are_checked_too(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: syn\ntask: {synthetic: {distill_size: 8, gold_size: 0, dev_size: 0}}\n"
        "models: {m: {init: {max_length: 32}}}\n"
        "stages:\n  g: {kind: generate, model: m, max_new_tokens: 8}\n"
        "  ev: {kind: eval, model: m, max_new_tokens: 8}\n"
    )
    code, out, err = validate(spec, capsys)
    assert code == 2 and "stages.g.max_new_tokens: the longest prompt (synthetic distill question distill-" in err, err


def test_prompt_count_equals_the_init_tokenizer(tmp_path):
    """The compiler's pure-Python count is the word-level tokenizer's own: for every corpus prompt,
    and for odd text (spaces, tabs, digits, punctuation, other scripts, special-token look-alikes)."""
    from compiler.spec.schema import TaskSpec
    from compiler.data.sizes import prompt_tokens
    from runtime.lib import models
    from runtime.lib import task as taskdata

    odd = [
        "  lead  two ",
        "a\tb</s>x <s> y",
        "x (A) 1,234.5 ok?",
        "½ ٣ x²",
        "a–b «q» $5 +=",
        "\n\nq\n",
        "é e\u0301 \u00a0x\u3000y",
        "<pad><unk>",
        "日本語のテキスト、です。",
        "emoji 🙂🙂 ok",
    ]
    for fmt, system in (("gsm8k", ""), ("multiple_choice", "Think. End with '#### <letter>'.")):
        task = TaskSpec(
            format=fmt,
            system_prompt=system,
            synthetic={"gold_size": 50, "dev_size": 10, "distill_size": 50, "test_size": 50},
        )
        rows = taskdata.gold(task, "test", 0) + taskdata.questions(task, "distill", 0)
        rows += [{"question": q} for q in odd]
        tok = models.build_tokenizer(task, 0)
        texts = [
            tok.apply_chat_template(taskdata.messages(r, task), add_generation_prompt=True, tokenize=False)
            for r in rows
        ]
        real = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
        assert [prompt_tokens(r, system) for r in rows] == real


# ----------------------------------------------------------------------------- runtime agrees
def test_the_runtime_reads_rows_as_validate_does(tmp_path):
    """A file changed after build is refused by the stage with the same file:line words."""
    from compiler.data.rows import DataError
    from compiler.spec.schema import TaskSpec
    from runtime.lib import task as taskdata

    shutil.copy(CORPUS / "answer_without_hashes.jsonl", tmp_path / "t.jsonl")
    task = TaskSpec(distill={"path": str(tmp_path / "t.jsonl")}, test={"path": str(tmp_path / "t.jsonl")})
    assert len(taskdata.questions(task, "distill", 0)) == 2  # distill answers are never read
    with pytest.raises(DataError, match=r"t\.jsonl:2: cannot read the final answer from 'The answer is 2\.'"):
        taskdata.gold(task, "test", 0)
