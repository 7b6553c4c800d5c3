"""The spec loader's errors, driven by the corpus of broken specs in tests/bad_specs/.

Each corpus file states what `distillc validate` must say about it in its first comment
lines (or, for files that cannot hold comments, in a sidecar `<file>.expect`):

    # exit: 2
    # expect: LINE:COL FIELD "FRAGMENT" ["FRAGMENT" ...]

One `expect` line per problem, in any order: a problem must be reported at exactly
`<file>:LINE:COL: FIELD: ` (FIELD `-` for a problem of the whole file) and its message,
value and hint together must hold every FRAGMENT (shell-style quoting). The number of
problems reported must equal the number of `expect` lines: nothing missing, nothing extra.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from compiler import cli

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "bad_specs"
BAD_SPECS = sorted(CORPUS.glob("*.yaml"))
DISTILLC = Path(sys.executable).with_name("distillc")
HEADER = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<field>.+?): (?P<message>.*)$")


def expectations(spec: Path) -> tuple[int, list[tuple[str, str, list[str]]]]:
    """(exit code, [(LINE:COL, FIELD, fragments)]) from the file's leading comments."""
    sidecar = spec.with_name(spec.name + ".expect")
    raw = sidecar.read_bytes() if sidecar.exists() else spec.read_bytes()
    code, expected = None, []
    for line in raw.split(b"\n"):
        if not line.startswith(b"#"):
            break
        text = line.decode("utf-8", "replace").lstrip("#").strip()
        if text.startswith("exit:"):
            code = int(text.split(":", 1)[1])
        elif text.startswith("expect:"):
            where, field, *fragments = shlex.split(text.split(":", 1)[1])
            expected.append((where, field, fragments))
    assert code is not None and expected, f"{spec.name}: no `# exit:` / `# expect:` header"
    return code, expected


def problems(stderr: str, header: re.Pattern = HEADER) -> list[dict]:
    """Split CLI output into problems: a `file:line:col: field: message` line (or `header`) plus its indented lines."""
    out: list[dict] = []
    for line in stderr.splitlines()[1:]:
        match = header.match(line)
        if match:
            out.append({**match.groupdict(), "text": line})
        else:
            assert line.startswith("    ") and out, f"unexpected output line: {line!r}"
            out[-1]["text"] += "\n" + line
    return out


def validate(spec: Path, capsys) -> tuple[int, str, str]:
    """`distillc validate` through the CLI's entry point, in-process (the corpus is large)."""
    code = cli.main(["validate", str(spec)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_report(spec: Path, code: int, out: str, err: str) -> None:
    want_code, expected = expectations(spec)
    assert code == want_code, err
    assert out == "" and "Traceback" not in err and "internal error" not in err, err
    found = problems(err)
    n = len(found)
    assert err.startswith(f"{n} problem{'s' if n != 1 else ''} in spec:\n"), err
    for p in found:
        assert p["file"] == str(spec), err
        assert "\n    hint: " in p["text"], f"no hint:\n{p['text']}"
    for where, field, fragments in expected:
        line, _, col = where.partition(":")
        field = "(spec)" if field == "-" else field
        hits = [p for p in found if p["line"] == line and p["col"] == col and p["field"] == field]
        assert hits, f"nothing reported at {line}:{col} {field}; got:\n{err}"
        assert any(all(f in p["text"] for f in fragments) for p in hits), (
            f"{fragments} not in the problem at {line}:{col} {field}:\n{err}"
        )
    assert n == len(expected), f"expected {len(expected)} problems, got {n}:\n{err}"


def test_corpus_is_large_and_varied():
    assert len(BAD_SPECS) >= 40
    assert sum(len(expectations(s)[1]) > 1 for s in BAD_SPECS) >= 5


@pytest.mark.parametrize("spec", BAD_SPECS, ids=lambda p: p.stem)
def test_bad_spec(spec, capsys):
    check_report(spec, *validate(spec, capsys))


def test_every_problem_of_a_multi_problem_spec_is_reported(capsys):
    """Schema errors, reference errors and missing data files come out in one pass."""
    spec = CORPUS / "multi_problem.yaml"
    code, out, err = validate(spec, capsys)
    fields = [p["field"] for p in problems(err)]
    assert code == 2 and len(fields) >= 10
    assert {
        "task.format",
        "task.distill.path",
        "models.student.init.hiden_size",
        "stages.teacher_samples.model",
        "stages.rl.reward_model",
        "stages.ev.kind",
    } <= set(fields)
    assert len(set(fields)) == len(fields)
    check_report(spec, code, out, err)


def test_a_broken_stage_is_not_reported_as_unknown_elsewhere(tmp_path, capsys):
    """A stage that fails validation is still a stage: references to it raise no second error."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: t\nmodels: {m: {init: {}}}\nstages:\n"
        "  teacher: {kind: sft, model: m, data: gold, epocs: 2}\n"
        "  samples: {kind: generate, model: teacher}\n"
        "  ev: {kind: evl, model: m}\n"
        "  votes: {kind: pseudo_reward, teacher: samples, students: [ev]}\n"
    )
    code, _, err = validate(spec, capsys)
    assert code == 2
    assert [p["field"] for p in problems(err)] == ["stages.teacher.epocs", "stages.ev.kind"], err


def test_huge_spec_is_refused(tmp_path, capsys):
    spec = tmp_path / "huge.yaml"
    spec.write_text("name: t\n" + "# padding\n" * 120_000)
    code, _, err = validate(spec, capsys)
    assert code == 2 and f"{spec}:1:1: (spec): the spec is larger than 1000000 bytes" in err


def test_unreadable_inputs_are_spec_errors(tmp_path, capsys):
    cases = [
        (tmp_path / "missing.yaml", "no such file"),
        (tmp_path, "is a directory"),
        (Path("/dev/zero"), "larger than 1000000 bytes"),
    ]  # endless, and stat() says 0 bytes
    for path, words in cases:
        code, _, err = validate(path, capsys)
        assert code == 2 and words in err and "Traceback" not in err


def test_no_payload_runs_while_loading(capsys):
    """YAML tags and $(...) ids are refused before anything could act on them."""
    markers = [Path("/tmp/distillc_pwned_tag"), Path("/tmp/distillc_pwned_id"), Path("/tmp/distillc_pwned")]
    for name in ("python_tag", "invalid_ids", "resources_injection"):
        code, _, _ = validate(CORPUS / f"{name}.yaml", capsys)
        assert code == 2
    assert not any(m.exists() for m in markers)


# ------------------------------------------------------------------ the real console script
SAMPLE = ["multi_problem", "binary_garbage", "python_tag", "empty"]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DISTILLC), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=HERE.parent,
    )


def test_console_script_matches_in_process_main(capsys):
    """The installed `distillc` prints exactly what main() prints, with the same exit code."""
    for name in SAMPLE:
        spec = CORPUS / f"{name}.yaml"
        real = run_cli("validate", str(spec), env={"DISTILLC_DEBUG": ""})
        check_report(spec, real.returncode, real.stdout, real.stderr)
        assert (real.returncode, real.stderr) == validate(spec, capsys)[::2]


def test_debug_shows_the_traceback():
    spec = str(CORPUS / "typo_stage_key.yaml")
    plain = run_cli("validate", spec, env={"DISTILLC_DEBUG": ""})
    debug = run_cli("validate", spec, env={"DISTILLC_DEBUG": "1"})
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "SpecError" in debug.stderr
    assert 'did you mean "epochs"?' in debug.stderr
