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
from typing import NamedTuple

INVALID = "[invalid]"  # what lm-eval's filters carry for "no answer" (its metric needs a string)

# "1,000" and "$1,200.50" are one number: thousands groups first, else plain digits.
_NUMBER = re.compile(r"[-+]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_LETTER = re.compile(r"\b([A-J])\b")
_BARE_LETTER = re.compile(r"\(?([A-Ja-j])[).]?")

# The strict reading, per format: a "####" marker, spaces, then the answer on the same line (group 1).
# lm-eval's gsm8k strict-match is `#### (\-?[0-9\.\,]+)`, first match; this one also takes "$1,200.50"
# and "+3", any run of spaces or none, and a letter for multiple choice ("#### (B)", "#### C.").
# A marker without an answer after it (cut off, or "#### Step 1") is not complete and is skipped.
# The decoding rule (answer_end, below) shares these patterns: a response stops where its answer ends.
STRICT_MARK = {
    "gsm8k": re.compile(r"####[ \t]*(" + _NUMBER.pattern + r")"),
    "multiple_choice": re.compile(r"####[ \t]*\(?([A-J])\b\)?"),
}


# The flexible reading's anchor: "the answer is N" ("is: N", "is **N**", 'is "N"' too) with N on the same
# line. A dangling "The answer is" (cut off at max_new_tokens) is not one: the one before it counts.
_ANSWER_IS = {
    "gsm8k": re.compile(r"(?i:answer is):?[ \t]*[\"'*]*[ \t]*(" + _NUMBER.pattern + r")"),
    "multiple_choice": re.compile(r"(?i:answer is):?[ \t]*[\"'*]*[ \t]*\(?([A-J])\b"),
}

# After "the answer is N": an arithmetic chain "(op M)+ = R" on the same line makes R the answer.
_RESULT = re.compile(r"(?:[ \t]*[-+*/x×][ \t]*" + _NUMBER.pattern + r")+[ \t]*=[ \t]*(" + _NUMBER.pattern + r")")


class Reading(NamedTuple):
    """A response's answer read two ways, both normalised (None: no answer that way).

    strict: the first complete "#### N" (lm-eval's gsm8k strict-match).
    flexible: the fallback, blind to markers: N of the last complete "the answer is N" (R where an
    equation "N + M = R" follows; multiple choice: the letter right after it); else the last number
    (letter A-J) in the whole text (lm-eval's flexible-extract takes the last number).
    """

    strict: str | None
    flexible: str | None

    @property
    def answer(self) -> str | None:
        """The pipeline's one answer: strict where the response has a complete marker, else flexible."""
        return self.strict if self.strict is not None else self.flexible


def read(text: str | None, fmt: str) -> Reading:
    """Both readings of a response. Why the FIRST marker: a model that does not stop writes its
    marker again and again ("#### 4\nThe answer is 4.\n#### 6 ... #### 2", or a last "####" cut off at
    max_new_tokens); its first answer is the one it gave, the rest is degenerate repetition."""
    if not text:
        return Reading(None, None)
    fmt = "multiple_choice" if fmt == "multiple_choice" else "gsm8k"
    mark = strict_match(text, fmt)
    said = list(_ANSWER_IS[fmt].finditer(text))
    if said and fmt == "gsm8k":  # N; "The answer is 24 + 24 = 52.": the result
        result = _RESULT.match(text, said[-1].end(1))
        found = [result.group(1) if result else said[-1].group(1)]
    else:  # a letter right after (prose holds stray capitals), else the text's last one
        found = [m.group(1) for m in said[-1:]] or (_LETTER if fmt == "multiple_choice" else _NUMBER).findall(text)
    return Reading(normalise(mark.group(1)) if mark else None, normalise(found[-1]) if found else None)


def strict_match(text: str, fmt: str):
    """The first complete answer marker of a response (a re.Match: group 1 the answer), or None."""
    return STRICT_MARK["multiple_choice" if fmt == "multiple_choice" else "gsm8k"].search(text or "")


def extract(text: str | None, fmt: str) -> str | None:
    """The normalised final answer of a response, or None when it holds none: THE reading that
    generate, votes, rewards, sft's dev check, eval and the report use (see `read`).

    Tiny or random models often write nothing usable: that is None, never an error.
    """
    return read(text, fmt).answer


def extract_strict(text: str | None, fmt: str) -> str | None:
    """The strict reading alone: the first complete "#### N", else None (lm-eval's strict-match)."""
    return read(text, fmt).strict


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
    """Every response -> its answer (INVALID when none): the pipeline's extract, inside lm-eval.

    `strict: true` reads the strict answer alone (extract_strict): the filters named "<name>_strict"
    (compiler.spec.lm_eval_filters.STRICT_SUFFIX), scored beside the pipeline's reading as lm-eval's gsm8k scores strict-match
    beside flexible-extract.
    """

    def __init__(self, format: str = "gsm8k", strict: bool = False) -> None:
        self.format, self.read = format, extract_strict if strict else extract

    def apply(self, resps, docs):
        return [[self.read(r if isinstance(r, str) else "", self.format) or INVALID for r in inst] for inst in resps]


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
# Where decoding may stop (runtime/lib/decoding.py) and where the strict reading looks: the first
# complete final answer. A gsm8k answer is "#### N" with N a number; it is complete at the end of
# its line (a later "1" could still extend "#### 1"). A dangling "#### " holds no number: not an answer.
# The marker is the strict reading's own (STRICT_MARK): decoding stops where the strict reader reads.


def answer_end(text: str | None, fmt: str) -> int | None:
    """Where the line holding the first complete "#### N" ends (index of its newline, else len(text)); else None.

    None for formats without a final-answer marker (multiple_choice) and for text without one.
    During decoding the answer is complete only once a newline follows: answer_end(text) < len(text).
    """
    if fmt != "gsm8k" or not text:
        return None
    found = strict_match(text, fmt)
    if found is None:
        return None
    newline = text.find("\n", found.end())
    return len(text) if newline < 0 else newline
