"""User-facing errors: one base class, caught only by the CLI.

A spec can hold many mistakes; users should fix them in one pass, so every
stage of the compiler collects `Problem`s and raises one `SpecError` at the end.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

EXIT_SPEC_ERROR = 2


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec, located as precisely as we can."""

    message: str
    field: str = ""  # dotted path, e.g. stages.teacher.temperatures[1]
    file: str = ""
    line: int = 0  # 1-based; 0 = unknown
    col: int = 0
    value: str | None = None  # the offending value, already shortened
    hint: str = ""
    data: bool = False  # found in a data file (file:line), not in the spec

    def format(self) -> str:
        loc = self.file or "<spec>"
        if self.line:
            loc += f":{self.line}" + (f":{self.col}" if self.col else "")
        message = " ".join(self.message.splitlines())  # one line per problem, whatever a library said
        parts = [f"{loc}: {self.field or '(spec)'}: {message}"]
        if self.value is not None:
            parts.append(f"    got: {self.value}")
        if self.hint:
            parts.append(f"    hint: {self.hint}")
        return "\n".join(parts)


class DistillcError(Exception):
    """Base for every error shown to users without a traceback."""

    exit_code = 1


class UsageError(DistillcError):
    """The command cannot do what was asked here (e.g. nothing built in this folder)."""

    exit_code = EXIT_SPEC_ERROR


class SpecError(DistillcError):
    """A spec is invalid; carries every problem found."""

    exit_code = EXIT_SPEC_ERROR

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.col, p.field))
        super().__init__(self.format())

    def format(self) -> str:
        n, data = len(self.problems), sum(p.data for p in self.problems)
        where = "data" if data == n else "spec and data" if data else "spec"
        head = f"{n} problem{'s' if n != 1 else ''} in {where}:"
        return "\n".join([head] + [p.format() for p in self.problems])


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return 'did you mean "x"?' for the closest choice, or ''.

    Besides close spellings, a unique prefix counts: "kl" -> "kl_coef".
    """
    word, choices = str(word), sorted(set(choices))
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close and len(word) >= 2:
        close = [c for c in choices if c.startswith(word)]
    return f'did you mean "{close[0]}"?' if len(close) == 1 else ""


def available(choices: Iterable[str]) -> str:
    return "available: " + ", ".join(sorted(set(choices)))


def short(value: object, limit: int = 80) -> str:
    """Render a bad value for an error line: one line, bounded length."""
    text = repr(value) if not isinstance(value, str) else repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def article(word: str) -> str:
    """The article as the word is said: "an eval", "a generate", and "an sft", "an rl": a short
    word without a vowel is spelled out letter by letter, and s, r, f, l, m, n are said with a vowel first."""
    first = re.split(r"[\W_]", word)[0]
    spelled = len(first) <= 3 and not re.search(r"[aeiouy]", first)
    vowel = first[:1] in tuple("aeiou") or (spelled and first[:1] in tuple("fhlmnrsx"))
    return ("an " if vowel else "a ") + word
