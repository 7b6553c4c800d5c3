"""One reading of a jsonl data row, shared by `distillc validate` and the runtime.

The compiler checks every row of a task's local files with `scan`; the runtime reads
them with `read_rows`, through the same code, so a file that validates is a file the
stages can read, and a row refused at run time is refused with the same words.
Pure Python: the runtime imports this module, never the other way round.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

from ..spec.errors import DistillcError

LETTERS = "ABCDEFGHIJ"
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_LETTER = re.compile(r"\(?([A-Ja-j])\)?\.?")


class DataError(DistillcError):
    """A data row or file that cannot be read; the message starts with file:line."""

    exit_code = 2


def user_text(row: dict) -> str:
    """What the user turn of a prompt says: the question, and for multiple choice its options."""
    if "options" in row:
        opts = " ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(row["options"]))
        return f"{row['question']} Options: {opts}"
    return row["question"]


def _final(answer: str) -> str:
    return answer.split("####")[-1].strip()


def _options(raw: dict) -> tuple[list[str] | None, str]:
    options = raw.get("options")
    if not isinstance(options, list) or not 2 <= len(options) <= len(LETTERS):
        return None, "a multiple_choice row needs `options`: a list of 2-10 texts"
    if any(isinstance(o, (list, dict, bool)) or o is None or str(o).strip() == "" for o in options):
        return None, "every option must be a non-empty text or number"
    return [str(o) for o in options], ""


def _target(answer: str, fmt: str, options: list | None) -> tuple[str | None, str]:
    """(final answer, '') or (None, why): gsm8k wants '#### <number>', multiple choice a letter."""
    if fmt == "multiple_choice":
        match = _LETTER.fullmatch(_final(answer))
        if not match:
            return None, f"cannot read the answer letter from {answer[-40:]!r}; end it with a letter A-J"
        letter = match.group(1).upper()
        if options is not None and LETTERS.index(letter) >= len(options):
            return None, f"the answer {letter} is not among the {len(options)} options (A-{LETTERS[len(options) - 1]})"
        return letter, ""
    final = _final(answer).replace(",", "")
    if "####" not in answer or not _NUMBER.fullmatch(final):
        return None, f"cannot read the final answer from {answer[-40:]!r}; end it with '#### <number>'"
    return final, ""


def parse_row(raw, fmt: str, split: str, index: int) -> tuple[dict | None, str]:
    """(row, '') or (None, what is wrong): the row as every stage sees it.

    gold/dev/test rows need an answer the format can read; distill rows need only a
    question (their answers are never read upstream of eval).
    """
    if not isinstance(raw, dict):
        array = " (a JSON array: the file must be JSON Lines, one object per line)" if isinstance(raw, list) else ""
        what = "a text" if isinstance(raw, str) else _what(raw)
        return None, f"a row must be a JSON object {{...}}, not {what}{array}"
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        return None, "a row needs a non-empty text `question`" + _known(raw, "question")
    ident = raw.get("id", f"{split}-{index:05d}")
    if isinstance(ident, (dict, list, bool)) or ident is None:
        return None, "`id` must be a text or a number"
    row: dict[str, object] = {"id": str(ident), "question": question}
    options = None
    if fmt == "multiple_choice":
        options, why = _options(raw)
        if options is None:
            return None, why
        row["options"] = options
    answer = raw.get("answer")
    if split != "distill" and not isinstance(answer, str):
        return None, f"a {split} row needs a text `answer`" + _known(raw, "answer")
    if isinstance(answer, str):
        target, why = _target(answer, fmt, options)
        if target is None and split != "distill":
            return None, why
        if target is not None:
            row |= {"answer": answer, "target": target}
    return row, ""


def _what(value) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, str):
        return repr(value[:40]) if value.strip() else "blank text"
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else "a number"


def _known(raw: dict, needed: str) -> str:
    """What the row holds instead, and the key that was probably meant."""
    if needed in raw:
        return f" (here it is {_what(raw[needed])})"
    keys = [k for k in raw if isinstance(k, str)]
    if not keys:
        return " (the row is empty)"
    meant = [k for k in keys if k.strip().lower() == needed] or difflib.get_close_matches(needed, keys, 1, 0.6)
    return f" (the row has: {', '.join(keys[:8])}" + (f'; did you mean "{meant[0]}"?)' if meant else ")")


def in_fraction(raw, fraction) -> bool:
    """Is this row in the [start, end) share? A stable hash of its question decides (not Python's hash()).

    A row without a text question belongs to every share, so that its problem is reported.
    """
    question = raw.get("question") if isinstance(raw, dict) else None
    if fraction is None or not isinstance(question, str):
        return True
    digest = hashlib.sha256(question.strip().encode("utf-8")).digest()
    return fraction[0] <= int.from_bytes(digest[:8], "big") / 2**64 < fraction[1]


def scan(
    path: str | Path, fmt: str, split: str, limit: int | None = None, fraction=None
) -> Iterator[tuple[int, dict | None, str]]:
    """(line number, row or None, problem) for every non-blank line in `fraction` of the file, streaming.

    Bytes are decoded line by line, so a bad byte is named by its line; a UTF-8
    byte-order mark at the start is allowed (editors add one).
    """
    n = 0
    with open(path, "rb") as fh:
        for lineno, raw_line in enumerate(fh, 1):
            if lineno == 1 and raw_line.startswith(b"\xef\xbb\xbf"):
                raw_line = raw_line[3:]
            elif lineno == 1 and raw_line[:2] in (b"\xff\xfe", b"\xfe\xff"):  # the rest would be noise
                yield lineno, None, "the file is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8"
                return
            try:
                text = raw_line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, None, f"not valid UTF-8 (byte {exc.start + 1} of the line is 0x{raw_line[exc.start]:02x})"
                continue
            if not text.strip():
                continue
            try:
                raw = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as exc:
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                yield lineno, None, f"not valid JSON ({why}); each line must hold one JSON object"
                continue
            if not in_fraction(raw, fraction):
                continue
            row, why = parse_row(raw, fmt, split, n)
            n += 1
            yield lineno, row, why
            if limit and n >= limit:
                return


def read_rows(path: str | Path, fmt: str, split: str, limit: int | None = None, fraction=None) -> tuple[dict, ...]:
    """Every row of a file (in `fraction` of it), or DataError at the first bad one (file:line: message)."""
    rows = []
    for lineno, row, why in scan(path, fmt, split, limit, fraction):
        if row is None:
            raise DataError(f"{path}:{lineno}: {why}")
        rows.append(row | {"where": f"{path}:{lineno}"})  # run-time checks name the row's place
    return tuple(rows)


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    """Rows of a jsonl file the stages wrote; a corrupt line is a DataError naming file:line."""
    with open(path, "rb") as fh:
        for lineno, raw_line in enumerate(fh, 1):
            try:
                text = raw_line.decode("utf-8")
                if not text.strip():
                    continue
                row = json.loads(text)
            except UnicodeDecodeError:
                raise DataError(f"{path}:{lineno}: not valid UTF-8") from None
            except (json.JSONDecodeError, RecursionError):
                raise DataError(
                    f"{path}:{lineno}: not valid JSON (a truncated or corrupted file? "
                    "delete it and run again to rebuild it)"
                ) from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: not a JSON object")
            yield row
