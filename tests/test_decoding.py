"""The decoding rule (runtime/lib/decoding.py, compiler/spec/decoding.py): which tokens stop a response, and the
answer stop, per row of a batch. Fast: an in-memory tokenizer, no model weights."""

from __future__ import annotations

import pytest

from compiler.spec import decoding as pure
from runtime.lib import answers
from runtime.lib import decoding

WORDS = [
    "<pad>",
    "<s>",
    "</s>",
    "<|eot|>",
    "<|user|>",
    "<|assistant|>",
    "So",
    "####",
    "14",
    "1",
    "\n",
    "the",
    "answer",
    "is",
    "Hi",
    "distillc-turn-end-probe",
    ".",
]
TURN_ENDS_WITH_EOT = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|eot|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tokenizer(template: str = TURN_ENDS_WITH_EOT):
    """A word-level tokenizer (whitespace split, "\\n" a token) whose chat template ends a turn with <|eot|>,
    not with its eos </s>: the Llama-3-Instruct shape."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="removed")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<|eot|>", "<|user|>", "<|assistant|>"],
    )
    tok.chat_template = template
    return tok


class Model:
    """What stop_token_ids reads of a model: its generation config."""

    def __init__(self, eos):
        from transformers import GenerationConfig

        self.generation_config = GenerationConfig(eos_token_id=eos)


def test_turn_end_is_the_special_token_after_the_assistant_content():
    tok = tokenizer()
    assert decoding.turn_end_id(tok) == tok.convert_tokens_to_ids("<|eot|>") == 3 != tok.eos_token_id
    assert decoding.turn_end_id(tokenizer(TURN_ENDS_WITH_EOT.replace("<|eot|>", "{{ eos_token }}"))) == 2
    # plain text after the content, or no template: no turn-end token to find
    assert decoding.turn_end_id(tokenizer(TURN_ENDS_WITH_EOT.replace("<|eot|>", " So <|eot|>"))) is None
    assert decoding.turn_end_id(tokenizer(None)) is None


def test_stop_ids_are_the_union_never_the_tokenizer_eos_alone():
    tok = tokenizer()
    assert decoding.stop_token_ids(Model(2), tok) == [2, 3]  # generation config int + turn end
    assert decoding.stop_token_ids(Model([9, 2]), tok) == [9, 2, 3]  # a list: every id kept, no duplicate
    assert decoding.stop_token_ids(Model(None), tok) == [2, 3]


def test_no_blank_line_stop_and_the_answer_stop_only_where_the_format_allows():
    assert pure.stop_strings("gsm8k") == [] == pure.stop_strings("multiple_choice")
    assert pure.answer_stop("gsm8k", True) and not pure.answer_stop("gsm8k", False)
    assert not pure.answer_stop("multiple_choice", True)


@pytest.mark.parametrize(
    "text, end",
    [
        ("So 5 + 9 = 14.\n#### 14\nThe answer is 14.\n#### 14", 22),
        ("#### 14", 7),  # a finished text: the line runs to its end
        ("#### $1,000.50 coins\nmore", 20),
        ("#### \nthe answer is 4\n#### 4\n#### 2", 28),  # a dangling marker is skipped: the first complete one
        ("####", None),
        ("#### \n", None),
        ("no marker 14", None),
        ("", None),
    ],
)
def test_answer_end(text, end):
    assert answers.answer_end(text, "gsm8k") == end
    assert answers.answer_end(text, "multiple_choice") is None


def test_trim_cuts_after_the_first_answer_line_only_when_asked():
    text = "So 14.\n#### 14\nThe answer is 14.\n#### 2\n"
    assert decoding.trim(text, "gsm8k", True) == "So 14.\n#### 14"
    assert decoding.trim(text, "gsm8k", False) == text.strip()
    assert decoding.trim(text, "multiple_choice", True) == text.strip()


def test_answer_stop_fires_per_row_of_a_batch():
    """Rows of one batch, fed step by step as generate does: each stops when ITS answer line ends, not before
    (#### 1 may still grow to 14), never on a dangling marker; stopped rows stay stopped."""
    import torch

    tok = tokenizer()
    prompt = [1, 4, 14, 5]
    script = [
        ["So", "####", "1", "\n", "the", "answer", "is"],  # "#### 1" complete at step 4
        ["####", "\n", "the", "answer", "is", "14", "."],  # dangling: never
        ["So", "the", "answer", "is", "####", "14", "\n"],  # at step 7, the last
        ["####", "14", ".", "So", "\n", "the", "."],
    ]  # "#### 14. So" ends at step 5
    ids = torch.tensor([prompt + tok.convert_tokens_to_ids(row) for row in script])
    crit = decoding.answer_stop_criterion(tok, len(prompt), "gsm8k")
    seen = [crit(ids[:, : len(prompt) + step], None).tolist() for step in range(1, 8)]
    first = [next((s + 1 for s in range(7) if seen[s][row]), None) for row in range(4)]
    assert first == [4, None, 7, 5]
    assert all(seen[s][0] for s in range(3, 7))  # sticky
    assert crit.at == [4, 0, 7, 5]


def test_row_lengths_and_cut_off():
    """Tokens up to and including the first stop id, or the answer stop's step; cut off only with no stop."""
    import torch

    gen = torch.tensor(
        [
            [6, 7, 3, 0, 0],  # turn end at 3 (not the tokenizer's eos): stopped, 3 tokens
            [6, 7, 8, 10, 0],  # the answer stop fired after 4 tokens, then padding
            [6, 6, 6, 6, 6],  # the whole budget, no stop: cut off
            [6, 6, 6, 6, 2],
        ]
    )  # eos as its very last token: stopped, not cut off
    assert decoding.row_lengths(gen, [2, 3], [0, 4, 0, 0]) == [(3, False), (4, False), (5, True), (5, False)]
    assert decoding.row_lengths(gen, [2, 3], None)[1] == (5, True)


def test_ppo_stops_at_the_template_turn_end():
    """TRL's PPO stops and scores at the tokenizer's eos only: it trains with a copy whose eos is the turn end."""
    from runtime.rl import ppo_tokenizer

    tok = tokenizer()
    ppo = ppo_tokenizer(tok)
    assert ppo.eos_token_id == 3 and tok.eos_token_id == 2  # the original (saved with the model) unchanged
    same = tokenizer(TURN_ENDS_WITH_EOT.replace("<|eot|>", "{{ eos_token }}"))
    assert ppo_tokenizer(same) is same
