"""Sizes checked before compute: prompt + new tokens against an `init:` model's context
(rl's rollout batch against the question count is RlStage.check_data).

An `init:` model's tokenizer is word-level (runtime/lib/models.py): its vocabulary holds every
piece of the task corpus, so a prompt's length is its number of pre-tokenizer pieces,
counted here in pure Python with the same rules (tests hold the count equal to the
real tokenizer's). Hub and local models keep their own tokenizers: not judged here.
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass, field

from ..spec.chat import SPECIAL, prompt_text
from .rows import user_text

_SPECIAL = re.compile("|".join(re.escape(t) for t in SPECIAL.values()))  # matched before pre-tokenizing
_ASCII_PUNCT = frozenset(string.punctuation)


@dataclass
class SplitSizes:
    """A split's questions as the stages will see them: how many, and each prompt's length."""

    lengths: list[int] = field(default_factory=list)  # init-tokenizer prompt tokens, in row order
    places: list[str] = field(default_factory=list)  # file:line (or synthetic split/index) of each row

    def longest(self, first: int | None = None) -> tuple[int, str]:
        """(tokens, place) of the longest of the first `first` prompts."""
        n = len(self.lengths) if first is None else min(first, len(self.lengths))
        if n == 0:
            return 0, ""
        i = max(range(n), key=self.lengths.__getitem__)
        return self.lengths[i], self.places[i]


def _split_kind(ch: str) -> str:
    """'p' punctuation and 'd' digits are pieces of their own; 'w' joins its neighbours."""
    if ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P"):
        return "p"
    if unicodedata.category(ch) in ("Nd", "Nl", "No"):
        return "d"
    return "w"


def _pieces(text: str) -> int:
    """Pieces of the word-level pre-tokenizer: Metaspace, isolated punctuation, single digits."""
    text = text.replace("\n", " ").replace(" ", "\u2581")
    if not text:
        return 0
    if not text.startswith("\u2581"):
        text = "\u2581" + text
    n = 0
    for word in re.split("(?=\u2581)", text):
        last = ""
        for ch in word:
            kind = _split_kind(ch)
            if kind != "w" or last != "w":
                n += 1
            last = kind
    return n


def word_level_tokens(text: str) -> int:
    """Tokens the word-level tokenizer gives `text` (special tokens count one each)."""
    specials = len(_SPECIAL.findall(text))
    return specials + sum(_pieces(part) for part in _SPECIAL.split(text))


def prompt_tokens(row: dict, system_prompt: str) -> int:
    """Tokens of a question's chat prompt (compiler.spec.chat.CHAT_TEMPLATE, BOS included)."""
    return word_level_tokens(prompt_text(user_text(row), system_prompt))


def check_context(pl, wired: dict, sizes: dict[str, SplitSizes]) -> None:
    """Problems (on the planner `pl`) for prompts that cannot fit an `init:` model's context (as the
    stage's class declares its `context`); only where the data was read."""
    for sid, (models, _) in wired.items():
        st = pl.spec.stages[sid]
        context = st.sizes_context()
        if context is None:
            continue
        role, split, first, new = context.model_field, context.split, context.first, context.new_tokens
        split = split or st.split
        ref, base = models.get(role), None
        if ref is not None:
            base = pl.spec.models.get(ref.base)
        if base is None or base.init is None or split not in sizes:
            continue
        longest, place = sizes[split].longest(getattr(st, first) if first else None)
        limit, wanted = base.init.max_length, getattr(st, new)
        if longest + wanted > limit:
            room = f"lower {new} to {limit - longest}" if longest < limit else "shorten that question"
            pl.problem(
                ("stages", sid, new),
                f"the longest prompt ({place}) has {longest} tokens; with {new} "
                f"{wanted} that is {longest + wanted}, more than the context of model "
                f"\"{ref.base}\" (max_length {limit})",
                wanted,
                f"{room}, or raise models.{ref.base}.init.max_length",
            )
