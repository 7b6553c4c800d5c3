"""Model references -> (model, tokenizer): hub ids, local dirs, packages, GGUF files, pruned models,
stage outputs, or `init:` blocks. Whatever is loaded from files is loaded from `local_folder(ref)`
(runtime/lib/model_folders.py), the one resolver, which makes a GGUF or pruned model's folder once.

An `init:` model is rebuilt identically wherever it is needed (seeded weights,
a word-level tokenizer made deterministically from the task corpus), so stages
share it without a shared cache. Heavy imports happen inside the functions.
"""

from __future__ import annotations

from collections import Counter

from compiler.spec.chat import CHAT_TEMPLATE, SPECIAL, TEMPLATE_WORDS
from compiler.spec.contract import ModelRef, StageConfig
from compiler.spec.schema import InitModel, TaskSpec

from . import ranks
from . import task as taskdata
from .common import derive_seed
from .model_folders import local_folder


def _pre_tokenizer():
    from tokenizers import pre_tokenizers

    # Metaspace keeps word boundaries for decoding; single digits make arithmetic learnable.
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
            pre_tokenizers.Punctuation(behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )


def build_tokenizer(task: TaskSpec, seed: int):
    """A word-level tokenizer whose vocabulary is counted from the task corpus.

    The vocabulary is sorted by (-count, token): the same corpus always gives the
    same ids, with no dependence on a trainer's tie-breaking.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    pre = _pre_tokenizer()
    counts: Counter = Counter()
    for text in taskdata.corpus(task, seed):
        counts.update(piece for piece, _ in pre.pre_tokenize_str(text.replace("\n", " ")))
    counts.update(str(d) for d in range(10))
    counts.update(piece for piece, _ in pre.pre_tokenize_str(TEMPLATE_WORDS))
    vocab = {tok: i for i, tok in enumerate(SPECIAL.values())}
    for tok, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        vocab.setdefault(tok, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk"]))
    tok.normalizer = normalizers.Replace("\n", " ")
    tok.pre_tokenizer = pre
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **{f"{k}_token": v for k, v in SPECIAL.items()})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(init: InitModel, vocab_size: int, seed: int):
    """A random-init causal LM from an `init:` block."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    ids = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    inter = init.intermediate_size or 2 * init.hidden_size
    if init.arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=init.hidden_size,
            intermediate_size=inter,
            num_hidden_layers=init.num_layers,
            num_attention_heads=init.num_heads,
            num_key_value_heads=init.num_heads,
            max_position_embeddings=init.max_length,
            tie_word_embeddings=init.tie_embeddings,
            **ids,
        )
    else:
        config = GPT2Config(
            vocab_size=vocab_size,
            n_embd=init.hidden_size,
            n_layer=init.num_layers,
            n_head=init.num_heads,
            n_inner=inter,
            n_positions=init.max_length,
            tie_word_embeddings=init.tie_embeddings,
            **ids,
        )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def pretrained(ref: ModelRef) -> tuple[str, dict]:
    """(what from_pretrained loads, its keyword arguments) for a reference that is not `init:`."""
    return local_folder(ref), {"revision": ref.revision, "trust_remote_code": ref.trust_remote_code}


def load_tokenizer(ref: ModelRef, task: TaskSpec, spec_seed: int, padding_side: str = "left"):
    """The tokenizer of a model reference, with a pad token and the given padding side."""
    if ref.source == "init":
        tok = build_tokenizer(task, spec_seed)
    else:
        from transformers import AutoTokenizer

        where, kw = pretrained(ref)
        tok = AutoTokenizer.from_pretrained(where, **kw)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_causal_lm(ref: ModelRef, task: TaskSpec, spec_seed: int, dtype=None, padding_side: str = "left"):
    """(model, tokenizer) for a reference; `init:` models are built, others loaded."""
    tok = load_tokenizer(ref, task, spec_seed, padding_side)
    if ref.source == "init":
        model = build_model(ref.init, len(tok), derive_seed(spec_seed, "init", ref.name))  # type: ignore[arg-type]  # source init: init is set
        if dtype is not None:
            model = model.to(dtype)
    else:
        from transformers import AutoModelForCausalLM

        where, kw = pretrained(ref)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kw)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


def load_sequence_classifier(ref: ModelRef, task: TaskSpec, spec_seed: int, dtype=None):
    """A scalar-head model (reward or value model) initialised from a reference."""
    from transformers import AutoModelForSequenceClassification

    tok = load_tokenizer(ref, task, spec_seed, padding_side="right")
    if ref.source == "init":
        with ranks.shared_folder() as tmp:  # build the LM, reload its body with a scalar head
            lm, _ = load_causal_lm(ref, task, spec_seed)
            if ranks.is_main():  # joined processes: save_pretrained writes on rank 0 only
                lm.save_pretrained(tmp)
            ranks.barrier()
            model = AutoModelForSequenceClassification.from_pretrained(tmp, num_labels=1, dtype=dtype)
    else:
        where, kw = pretrained(ref)
        model = AutoModelForSequenceClassification.from_pretrained(where, num_labels=1, dtype=dtype, **kw)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def save(model, tokenizer, path) -> None:
    """Save weights and tokenizer together, so any stage (and lm-eval) can reload them."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def save_model_dir(
    model,
    tokenizer,
    out,
    log_rows: list[dict],
    cfg: StageConfig,
    results: dict | None = None,
    batch: dict | None = None,
) -> None:
    """Write weights, tokenizer, train_log.jsonl and a model card beside `out`, then rename:
    no half-written model is visible. `results`: metric name -> value the stage measured, `batch`:
    the optimizer step's batch (ranks.batch), both for the card. Rank 0 calls it (runtime/lib/ranks.py)."""
    import tempfile
    from pathlib import Path

    from .checkpoints import swap_in
    from .common import atomic_write_text, write_jsonl
    from .model_card import card_text

    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_path.parent, prefix=f".{out_path.name}."))
    tmp.chmod(0o755)
    save(model, tokenizer, tmp)
    write_jsonl(tmp / "train_log.jsonl", log_rows)
    atomic_write_text(tmp / "README.md", card_text(cfg, results, batch))
    swap_in(tmp, out_path)
