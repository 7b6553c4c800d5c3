"""Fuzzing `distillc validate` (hypothesis): random YAML documents, random mutations of the
shipped specs, random bytes and rows in data files. Whatever the input: no traceback, no
hang, exit 0 or 2, and every refusal names a place (file:line).

Deterministic by default (the same examples on every machine); `DISTILLC_FUZZ=explore`
draws fresh random examples, many more of them, to hunt for new failures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import cli
from compiler.spec.schema import DataSource, InitModel, ModelSpec, Spec, SyntheticTask, TaskSpec
from compiler.spec.stagekind import Resources
from compiler.spec.stages import KINDS, STAGE_CLASSES

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "specs").glob("*.yaml"))
VALID_DATA = REPO / "tests" / "bad_data" / "valid" / "gsm8k"
HANG_S = 60  # CPU seconds (not wall time, which load stretches): one validate takes milliseconds
HEADER = re.compile(r"^(?P<file>\S.*?):(?P<line>[1-9]\d*)(:\d+)?: \S")
COMMON = dict(database=None, suppress_health_check=list(HealthCheck), deadline=None)
settings.register_profile("ci", derandomize=True, **COMMON)
settings.register_profile("explore", derandomize=False, **COMMON)
PROFILE = "explore" if os.environ.get("DISTILLC_FUZZ") == "explore" else "ci"
SCALE = 20 if PROFILE == "explore" else 1
settings.load_profile(PROFILE)


def _hang(signum, frame):
    raise AssertionError(f"validate used more than {HANG_S} s of CPU: a hang")


def check_validate(path: Path, capsys, places: tuple[str, ...]) -> int:
    """Run `distillc validate` in-process; hold it to the rules; return its exit code."""
    old = signal.signal(signal.SIGPROF, _hang)
    signal.setitimer(signal.ITIMER_PROF, HANG_S)  # counts this process's CPU time only
    try:
        code = cli.main(["validate", str(path)])
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)
    out, err = capsys.readouterr()
    assert code in (0, 2), f"exit {code}:\n{err}"
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 0:
        assert err == "" and out.startswith(f"{path}: ok ("), out + err
        return code
    lines = err.splitlines()
    assert re.match(r"^\d+ problems? in (spec|data|spec and data):$", lines[0]), err
    for line in lines[1:]:
        if not line.startswith("    "):
            match = HEADER.match(line)
            assert match and match["file"].endswith(places), f"a problem that names no place: {line!r}\n{err}"
    return code


class Tally:
    """Cases run per outcome, reported in pytest's summary (conftest.py prints `fuzz_cases`)."""

    def __init__(self, record_property, name: str):
        self.counts = {0: 0, 2: 0}
        self.record, self.name = record_property, name

    def add(self, code: int) -> None:
        self.counts[code] += 1

    def report(self) -> None:
        n = sum(self.counts.values())
        self.record("fuzz_cases", f"{self.name}: {n} cases ({self.counts[0]} valid, {self.counts[2]} refused)")


# ----------------------------------------------------------------------------- random YAML documents
SCHEMA = (Spec, TaskSpec, DataSource, SyntheticTask, ModelSpec, InitModel, Resources, *STAGE_CLASSES.values())
FIELDS = sorted({f for model in SCHEMA for f in model.model_fields} | set(KINDS))  # the words a spec is made of
names = st.one_of(st.sampled_from(FIELDS), st.text(string.ascii_lowercase + "_", min_size=1, max_size=8))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True),
    st.sampled_from(FIELDS),
    st.text(max_size=20),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(names, inner, max_size=5)),
    max_leaves=30,
)
# a document that looks like a spec: the top-level keys are right, what is under them is random
spec_like = st.fixed_dictionaries(
    {"name": scalars, "models": documents, "stages": documents}, optional={"task": documents, "seed": scalars}
)


SMALL = {
    "name": "f",
    "seed": 0,
    "task": {"synthetic": {"gold_size": 20, "dev_size": 5, "distill_size": 20, "test_size": 10}},
    "models": {"m": {"init": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "max_length": 256}}},
    "stages": {
        "g": {"kind": "generate", "model": "m", "max_new_tokens": 16},
        "v": {"kind": "pseudo_reward", "teacher": "g"},
        "s": {"kind": "sft", "model": "m", "data": "v"},
        "e": {"kind": "eval", "model": "s", "max_new_tokens": 16},
    },
}


def _leaves(doc, path=()):
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _leaves(value, path + (key,))
    yield path


def _set(doc, path, value):
    import copy

    doc = copy.deepcopy(doc)
    if not path:
        return value
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


# a valid small spec with one value (or whole block) replaced by a random one: often still valid
perturbed = st.builds(
    _set,
    st.just(SMALL),
    st.sampled_from(sorted(set(_leaves(SMALL)), key=str)),
    st.one_of(st.integers(0, 300), st.sampled_from(["m", "s", "g", "v", "gold"]), scalars, documents),
)


@pytest.mark.slow
def test_random_yaml_documents(tmp_path, capsys, record_property):
    tally, path = Tally(record_property, "random YAML documents"), tmp_path / "spec.yaml"

    @settings(max_examples=150 * SCALE)
    @given(st.one_of(documents, spec_like, perturbed, perturbed, st.text(max_size=200)))
    def run(doc):
        text = doc if isinstance(doc, str) else yaml.safe_dump(doc, allow_unicode=True)
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        tally.add(check_validate(path, capsys, (str(path),)))

    run()
    tally.report()


# ----------------------------------------------------------------------------- mutations of the shipped specs
WORDS = [
    "0",
    "-1",
    "1.5",
    "1e9",
    "yes",
    "null",
    "[]",
    "{}",
    "''",
    "x",
    "teacher",
    "student",
    "gold",
    "eval",
    "sft",
    "rl",
    "&a",
    "*a",
    "!!python/object:os.system",
    "'",
    "\"",
    ":",
    "- ",
    "{",
    "]",
    "#",
    "\t",
    "é",
]


def mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    """Apply (kind, position, word) edits: replace a token, delete / duplicate / swap a line, cut, insert."""
    for kind, pos, word in edits:
        lines = text.split("\n")
        i = pos % max(len(lines), 1)
        if kind == 0:  # replace one token of a line
            tokens = re.split(r"(\s+|[:,{}\[\]])", lines[i])
            j = pos % max(len(tokens), 1)
            tokens[j : j + 1] = [word]
            lines[i] = "".join(tokens)
        elif kind == 1:
            del lines[i]
        elif kind == 2:
            lines.insert(i, lines[i])
        elif kind == 3:
            lines[i], lines[-1 - i] = lines[-1 - i], lines[i]
        elif kind == 4:
            return "\n".join(lines)[: pos % (len(text) + 1)]
        else:
            lines[i] = lines[i][: pos % (len(lines[i]) + 1)] + word + lines[i][pos % (len(lines[i]) + 1) :]
        text = "\n".join(lines)
    return text


@pytest.mark.slow
def test_mutated_shipped_specs(tmp_path, capsys, record_property):
    tally = Tally(record_property, "mutated shipped specs")
    edit = st.tuples(st.integers(0, 5), st.integers(0, 10**6), st.sampled_from(WORDS) | st.text(max_size=6))

    @settings(max_examples=150 * SCALE)
    @given(st.sampled_from(SHIPPED), st.lists(edit, min_size=1, max_size=4))
    def run(spec, edits):
        path = tmp_path / spec.name
        path.write_text(mutate(spec.read_text(), edits), encoding="utf-8", errors="surrogatepass")
        tally.add(check_validate(path, capsys, (str(path),)))

    run()
    tally.report()


# ----------------------------------------------------------------------------- data files
DATA_SPEC = """name: fuzz
task:
  gold: {path: gold.jsonl}
  dev: {path: dev.jsonl}
  distill: {path: distill.jsonl}
  test: {path: test.jsonl}
models: {m: {init: {hidden_size: 16, num_layers: 1, num_heads: 2, max_length: 512}}}
stages:
  teacher: {kind: sft, model: m, data: gold, stop_at_dev_accuracy: 0.5}
  samples: {kind: generate, model: teacher, max_new_tokens: 8}
  ev: {kind: eval, model: teacher, max_new_tokens: 8}
"""
keys = st.sampled_from(["question", "answer", "options", "id", "Question", "target", ""]) | st.text(max_size=5)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(["#### 4", "x #### 1,234", "#### B", "A", "What is 2+2?", "-0.5"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
rows = st.dictionaries(keys, json_values, max_size=5).map(json.dumps) | json_values.map(json.dumps)
lines = rows | st.binary(max_size=60).map(lambda b: b.decode("latin-1")) | st.sampled_from(["", " ", "{", "\x00"])


@pytest.mark.slow
def test_random_bytes_and_rows_in_data_files(tmp_path, monkeypatch, capsys, record_property):
    monkeypatch.chdir(tmp_path)
    tally, spec = Tally(record_property, "random data files"), tmp_path / "spec.yaml"
    spec.write_text(DATA_SPEC)
    blob = st.binary(max_size=300)
    text_rows = st.lists(lines, max_size=6).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))
    valid = st.sampled_from(["gold", "dev", "distill", "test"]).map(lambda s: (VALID_DATA / f"{s}.jsonl").read_bytes())
    # a valid file with random lines put in: blank lines, extra keys and a BOM pass, the rest is refused
    inserted = st.builds(
        lambda base, at, extra: b"\n".join(base.split(b"\n")[:at] + [extra] + base.split(b"\n")[at:]),
        valid,
        st.integers(0, 6),
        text_rows | st.just(b"") | st.just(b"\xef\xbb\xbf"),
    )

    @settings(max_examples=150 * SCALE)
    @given(st.sampled_from(["gold", "dev", "distill", "test"]), blob | text_rows | inserted)
    def run(split, content):
        for s in ("gold", "dev", "distill", "test"):
            shutil.copy(VALID_DATA / f"{s}.jsonl", tmp_path / f"{s}.jsonl")
        (tmp_path / f"{split}.jsonl").write_bytes(content)
        tally.add(check_validate(spec, capsys, (str(spec), ".jsonl")))

    run()
    tally.report()
