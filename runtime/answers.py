"""Answers: the one reading of a response's final answer, and the one majority vote.

Every place that turns text into an answer goes through here: generate (the
`answer` of each sample), pseudo_reward (the vote), rl's answer rewards, sft's dev
check, eval (lm-eval's filters and metric load this module through the file the
compiler writes beside the task YAML), the report, and gold targets. Two copies of
this logic once disagreed ("#### 1,000" read as "000"; "7.0" vs "7"; two tie-break
rules in one report), and on real GSM8K that miscounts.

Pure Python (no torch, no lm_eval): light stages and lm-eval's loader import it cheaply.
"""
from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal, InvalidOperation

INVALID = "[invalid]"   # what lm-eval's filters carry for "no answer" (its metric needs a string)

# "1,000" and "$1,200.50" are one number: thousands groups first, else plain digits.
_NUMBER = re.compile(r"[-+]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_LETTER = re.compile(r"\b([A-J])\b")
_ANSWER_IS = re.compile(r"answer is", re.IGNORECASE)
_BARE_LETTER = re.compile(r"\(?([A-Ja-j])[).]?")


def extract(text: str | None, fmt: str) -> str | None:
    """The normalised final answer of a response, or None when it holds none.

    Where to look: after the last "####" (GSM8K's marker; an empty tail is no
    answer), else after the last "The answer is", else the whole text. What to
    take there: the LAST number (gsm8k) or standalone letter A-J (multiple choice;
    "(B)" and "B)" count). Tiny or random models often write nothing usable:
    that is None, never an error.
    """
    if not text:
        return None
    if "####" in text:
        tail = text.rsplit("####", 1)[-1]
    else:
        marks = list(_ANSWER_IS.finditer(text))
        tail = text[marks[-1].end():] if marks else text
    found = (_LETTER if fmt == "multiple_choice" else _NUMBER).findall(tail)
    return normalise(found[-1]) if found else None


def normalise(answer) -> str | None:
    """One spelling per answer: numbers "1,000" -> "1000", "$1,200.50" -> "1200.5", "7.0" -> "7",
    "+3" -> "3", "-0" -> "0"; letters "(b)" / "B)" -> "B". Anything else (None, "", "[invalid]") -> None."""
    if answer is None:
        return None
    text = str(answer).strip()
    letter = _BARE_LETTER.fullmatch(text)
    if letter:
        return letter.group(1).upper()
    if not _NUMBER.fullmatch(text):
        return None
    try:
        value = Decimal(text.replace("$", "").replace(",", ""))
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def same(answer, target) -> bool:
    """Do two answers say the same thing? Neither side may be missing."""
    a, b = normalise(answer), normalise(target)
    return a is not None and a == b


def vote(answers: list) -> tuple[str | None, float]:
    """(majority answer, share of ALL answers voting for it); the one vote of the project.

    Missing answers (None, "[invalid]") never vote, but count in the share: a
    question most samples cannot answer has a weak majority. Ties go to the
    smallest answer string: deterministic and independent of sample order, so a
    resumed or reordered run votes the same. (This is the rule pseudo-labels were
    always made with; lm-eval's own majority_vote, first seen with "[invalid]"
    voting, is no longer used.) No usable answer at all gives (None, 0.0).
    """
    counts = Counter(a for a in map(normalise, answers) if a is not None)
    if not counts:
        return None, 0.0
    best = min(counts, key=lambda a: (-counts[a], a))
    return best, counts[best] / len(answers)


# ----------------------------------------------------------------------------- lm-eval
# lm-eval builds each filter step as `function(**kwargs)` and calls `.apply(resps, docs)`;
# the task YAML names these classes with `!function` (see compiler/templates/lm_eval_task.yaml.j2).
class ExtractFilter:
    """Every response -> its answer (INVALID when none): the pipeline's extract, inside lm-eval."""

    def __init__(self, format: str = "gsm8k") -> None:   # noqa: A002 (the spec's field name)
        self.format = format

    def apply(self, resps, docs):
        return [[extract(r if isinstance(r, str) else "", self.format) or INVALID for r in inst] for inst in resps]


class VoteFilter:
    """A question's extracted answers -> [their majority vote] (INVALID when none voted)."""

    def __init__(self) -> None:
        pass

    def apply(self, resps, docs):
        return [[vote(list(inst))[0] or INVALID] for inst in resps]


def process_results(doc: dict, results: list) -> dict:
    """lm-eval's per-question score: exact_match is `same` on the filtered answer and the gold target."""
    return {"exact_match": float(same(results[0], doc["target"]))}


# ----------------------------------------------------------------------------- answer end
# Where decoding may stop (runtime/decoding.py) and where the strict reading looks: the first
# complete final answer. A gsm8k answer is "#### N" with N a number; it is complete at the end of
# its line (a later "1" could still extend "#### 1"). A dangling "#### " holds no number: not an answer.
_FIRST_MARKED = re.compile(r"####[ \t]*" + _NUMBER.pattern)


def answer_end(text: str | None, fmt: str) -> int | None:
    """Where the line holding the first complete "#### N" ends (index of its newline, else len(text)); else None.

    None for formats without a final-answer marker (multiple_choice) and for text without one.
    During decoding the answer is complete only once a newline follows: answer_end(text) < len(text).
    """
    if fmt != "gsm8k" or not text:
        return None
    found = _FIRST_MARKED.search(text)
    if found is None:
        return None
    newline = text.find("\n", found.end())
    return len(text) if newline < 0 else newline
