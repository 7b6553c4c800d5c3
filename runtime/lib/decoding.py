"""The decoding rule: where a response stops, the same for generate, eval (lm-eval) and rl rollouts.

A response stops at any of the model's stop tokens: its generation config's eos_token_id (an
int or a list), the tokenizer's eos, and the token its chat template ends an assistant turn
with. Never only the tokenizer's eos: Llama-3-Instruct ends turns with <|eot_id|> while its eos
is <|end_of_text|> (its generation config lists both), and a model stopped at eos alone runs to
the length limit on every sample. Besides tokens: the task's stop strings (compiler/spec/decoding.py,
none for chat models) and, where the stage asks and the format allows, the first complete final
answer (runtime.lib.answers.answer_end): a row stops at the end of the line of its first "#### N", and
its text is cut there. A response that reached the length limit without any stop is `cut_off`.

Heavy imports stay inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

from compiler.spec.decoding import answer_stop, stop_strings  # noqa: F401  (the pure half; stages import it here)

from . import answers

_MARK = "distillc-turn-end-probe"


def turn_end_id(tok) -> int | None:
    """The special token the chat template writes right after an assistant message, or None.

    Found by rendering a dummy user/assistant exchange and reading the tokens after the content:
    the first special token before any other text. A template that cannot render it gives None.
    """
    if not getattr(tok, "chat_template", None):
        return None
    try:
        text = tok.apply_chat_template(
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _MARK}], tokenize=False
        )
    except Exception:
        return None
    if _MARK not in text:
        return None
    special = set(tok.all_special_ids) | {
        i for i, t in getattr(tok, "added_tokens_decoder", {}).items() if getattr(t, "special", False)
    }
    for i in tok(text.split(_MARK, 1)[1], add_special_tokens=False)["input_ids"]:
        if i in special:
            return i
        if tok.decode([i]).strip():
            return None
    return None


def stop_token_ids(model, tok) -> list[int]:
    """Every token that ends a response: generation config eos (int or list), tokenizer eos, template turn end."""
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    found = list(gen) if isinstance(gen, (list, tuple)) else [gen]
    found += [tok.eos_token_id, turn_end_id(tok)]
    return list(dict.fromkeys(int(i) for i in found if i is not None))


_NEWLINES: dict[int, tuple] = {}  # id(tokenizer) -> (tokenizer, ids of the tokens whose text holds a newline)


def newline_ids(tok):
    """The ids of every token whose text holds a newline, once per tokenizer (a tensor).

    The answer stop looks at a row only when its newest token is one of these: a test of the
    whole batch at once, where decoding each row's last token at every step cost ~20% of the
    demo's sampling time. The tokenizer is kept beside its ids, so its id() is never reused.
    """
    import torch

    if id(tok) not in _NEWLINES:
        pieces = tok.batch_decode([[i] for i in range(len(tok))])
        _NEWLINES[id(tok)] = (tok, torch.tensor([i for i, p in enumerate(pieces) if "\n" in p], dtype=torch.long))
    return _NEWLINES[id(tok)][1]


def answer_stop_criterion(tok, prompt_length: int, fmt: str):
    """A transformers StoppingCriteria: per row, true once the row's first complete final answer has ended.

    It decodes a row only when its newest token holds a newline (the only moment an answer can
    become complete), and remembers after how many generated tokens each row stopped (`at`, 0 for
    rows it did not stop) for the token and cut-off counts.
    """
    import torch
    from transformers import StoppingCriteria

    newlines = newline_ids(tok)

    class AnswerStop(StoppingCriteria):
        def __init__(self) -> None:
            self.at: list[int] = []

        def __call__(self, input_ids, scores, **kwargs):
            rows, steps = input_ids.shape[0], input_ids.shape[1] - prompt_length
            self.at = self.at or [0] * rows
            hit = torch.isin(input_ids[:, -1], newlines.to(input_ids.device)).tolist()
            for row in range(rows):
                if self.at[row] or not hit[row]:
                    continue
                text = tok.decode(input_ids[row, prompt_length:], skip_special_tokens=True)
                end = answers.answer_end(text, fmt)
                if end is not None and end < len(text):
                    self.at[row] = steps
            return torch.tensor([a > 0 for a in self.at], dtype=torch.bool, device=input_ids.device)

    return AnswerStop()


def trim(text: str, fmt: str, stop_at_answer: bool) -> str:
    """A response's text as every stage keeps it: cut after its first complete answer (if the rule says so), stripped."""
    if answer_stop(fmt, stop_at_answer):
        end = answers.answer_end(text, fmt)
        text = text if end is None else text[:end]
    return text.strip()


def row_lengths(gen, stop_ids: list[int], answer_at: list[int] | None) -> list[tuple[int, bool]]:
    """(generated tokens up to and including the stop, cut_off) per row of a generated batch.

    `gen`: the generated tokens only ([rows, steps]; a finished row is padded to the longest);
    `answer_at`: the answer criterion's per-row stop step (0: not stopped by it), or None. A row
    that no stop ended is cut off: generation ran on until the max_new_tokens budget was spent.
    """
    import torch

    is_stop = torch.isin(gen, torch.tensor(stop_ids, device=gen.device))
    out = []
    for row in range(gen.shape[0]):
        ends = [int(is_stop[row].int().argmax()) + 1] if bool(is_stop[row].any()) else []
        ends += [answer_at[row]] if answer_at and answer_at[row] else []
        out.append((min(ends), False) if ends else (gen.shape[1], True))
    return out
