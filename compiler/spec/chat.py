"""The chat template of `init:` models: one home for the runtime tokenizer that applies it
(runtime/lib/models.py) and the compiler's size check that counts its tokens (compiler/data/sizes.py).

Pure Python (no tokenizers, no torch): the compiler imports it. `prompt_text` writes, for one
question, what CHAT_TEMPLATE renders with add_generation_prompt; a test holds the two equal.
"""

from __future__ import annotations

SPECIAL = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}
QUESTION, ANSWER = "Question:", "Answer:"
# No newlines: the word-level tokenizer splits on spaces only, so the template stays one line.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }} "
    f"{{% elif m['role'] == 'user' %}}{QUESTION} {{{{ m['content'] }}}} {ANSWER}"
    "{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)
TEMPLATE_WORDS = f"{QUESTION} {ANSWER} Options: (A) #### "  # words the chat template (and the task) add


def prompt_text(user: str, system_prompt: str = "") -> str:
    """A question's chat prompt as CHAT_TEMPLATE renders it (BOS included, no response yet)."""
    system = f"{system_prompt} " if system_prompt else ""
    return f"{SPECIAL['bos']}{system}{QUESTION} {user} {ANSWER}"
