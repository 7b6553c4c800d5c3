"""The decoding rule's pure half: which stop strings a task has, and whether a stage stops at its answer.

One place, read by the compiler (it renders lm-eval's `until` into the eval task YAML) and by the
runtime (generate's and rl's sampling, eval's lm-eval model: runtime/lib/decoding.py), so that the
samples a pipeline trains on and the answers eval scores are decoded under the same rule. Once the
eval task stopped at "\\n\\n" and generate did not: a real instruct model writes paragraphs, and eval
kept only the first one.

The other half needs a tokenizer and a model (the stop token ids) and lives in runtime/lib/decoding.py.
Pure: no torch, no transformers.
"""

from __future__ import annotations

# Formats whose final answer has a safe end: a gsm8k answer is complete at the end of the line that
# holds its first "#### N" (runtime.lib.answers.answer_end). A multiple-choice letter has no marker that
# says "final": stopping at the first letter would cut reasoning, so no answer stop there.
ANSWER_STOP_FORMATS = ("gsm8k",)


def stop_strings(fmt: str) -> list[str]:
    """Strings that end a response besides the stop tokens: none.

    Every stage prompts through the model's chat template (eval and generate refuse a model
    without one), and a chat model ends its turn with a token: a blank line is a paragraph,
    not the end of an answer. `fmt` is the task format: the place a task-specific stop would go.
    """
    del fmt
    return []


def answer_stop(fmt: str, stop_at_answer: bool) -> bool:
    """Does decoding stop at the first complete final answer? The stage option, where the format allows it."""
    return bool(stop_at_answer) and fmt in ANSWER_STOP_FORMATS
