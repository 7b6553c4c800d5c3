"""Do the prompts fit the model? Checked when a stage starts, from the tokenizer and the config alone.

`init:` models are checked at validate (compiler/data/sizes.py counts their word-level tokens); a hub
or local model's tokenizer is known only here. A prompt that does not fit would overflow the
position table (generate, rl) or be cut from the left (lm-eval): refuse it before any weights
load, naming the longest prompt's file:line (or question id).
"""

from __future__ import annotations

from compiler.data.rows import DataError
from compiler.spec.contract import StageConfig

from . import task as taskdata


class ContextOverflow(DataError):
    """The longest prompt plus the new tokens exceeds the model's context."""


def context_length(ref, tok) -> int:
    """The model's context in tokens: `max_length` for init models, else its config (no weights read)."""
    if ref.source == "init":
        return ref.init.max_length
    from lm_eval.models.utils import resolve_max_length
    from transformers import AutoConfig

    from .models import pretrained

    where, kw = pretrained(ref)
    config = AutoConfig.from_pretrained(where, **kw)
    return resolve_max_length(config, tok)


def check_context(ref, tok, task, rows: list[dict], new_tokens: int, what: str) -> None:
    """Raise ContextOverflow when the longest chat prompt of `rows` plus `new_tokens` exceeds the context."""
    if not rows:
        return
    texts = [
        tok.apply_chat_template(taskdata.messages(r, task), add_generation_prompt=True, tokenize=False) for r in rows
    ]
    lengths = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
    i = max(range(len(rows)), key=lengths.__getitem__)
    limit = context_length(ref, tok)
    if lengths[i] + new_tokens > limit:
        where = rows[i].get("where") or f"question {rows[i]['id']}"
        raise ContextOverflow(
            f"{where}: the longest prompt has {lengths[i]} tokens; with {what} {new_tokens} that is "
            f"{lengths[i] + new_tokens}, more than model {ref.name!r}'s {limit}-token context. Lower "
            f"{what}, shorten or drop that question, or use a model with a longer context"
        )


def check_context_before_weights(cfg: StageConfig, ref, rows: list[dict], new_tokens: int, what: str) -> None:
    """check_context for a stage about to load `ref`: init models were measured at validate, others only now."""
    if ref.source != "init":
        from .models import load_tokenizer

        check_context(ref, load_tokenizer(ref, cfg.task, cfg.spec_seed), cfg.task, rows, new_tokens, what)
