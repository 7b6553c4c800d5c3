"""eval's lm-eval model: lm-eval's HFLM decoding under the project's one rule (runtime/lib/decoding.py).

lm-eval generates itself (so its numbers compare with others'), but by its own rule: it stops at
the tokenizer's eos and the task's `until` strings only. This subclass makes it stop where generate
and rl stop (every stop token of the model; the first complete final answer where the stage asks),
cuts and strips the text as generate does, and records per response whether it was cut off
(reached max_gen_toks without a stop) and how many tokens it generated. Only `_model_generate`,
`generate_until` and `tok_batch_encode` are overridden; what lm-eval scores is its own.

Seeds belong to lm-eval's batches (`apply_batches`): batch i of its (length-sorted) order draws from its
own seed, so a shard of a sharded eval (compiler/spec/shards.py), which runs the same batches and
generates only its contiguous range of them, samples exactly what one job samples there.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from . import decoding

_CLASS: dict = {}


def ruled_hflm():
    """The HFLM subclass, built once per process (lm-eval is imported only here, when eval runs)."""
    if "cls" in _CLASS:
        return _CLASS["cls"]
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.utils_hf import stop_sequences_criteria

    class RuledHFLM(HFLM):
        answer_format: str | None = None  # set by `apply_rule`: stop at this format's first complete answer
        batch_seed: Callable[[int], int] | None = None  # set by `apply_batches`: batch index -> its seed
        keep: range | None = None  # set by `apply_batches`: the batches this job generates (None: all)
        skipping = False  # the current batch is another shard's
        batch = 0  # the index of the next batch in lm-eval's order
        queued: dict[str, deque[int]]  # set by `generate_until`: prompt -> its requests' doc ids, in order

        def tok_batch_encode(self, strings, *args, **kwargs):
            self._contexts = list(strings)  # the batch's prompts, in the rows' order: keys for cut_offs
            return super().tok_batch_encode(strings, *args, **kwargs)

        def _model_generate(self, context, max_length, stop, **generation_kwargs):
            if self.batch_seed is not None and not self.start_batch(self._contexts):
                return context  # another shard's batch: nothing generated (an empty response), nothing recorded
            kw = without_zero_temperature(generation_kwargs)  # as HFLM does
            length = context.shape[1]
            criteria = stop_sequences_criteria(self.tokenizer, stop, length, context.shape[0])
            answer = (
                decoding.answer_stop_criterion(self.tokenizer, length, self.answer_format)
                if self.answer_format
                else None
            )
            if answer is not None:
                criteria.append(answer)
            stop_ids = decoding.stop_token_ids(self.model, self.tokenizer)
            with torch.autocast(
                device_type=self.device.type,
                dtype=self.mixed_precision_dtype,
                enabled=self.mixed_precision_dtype is not None,
            ):
                out = self.model.generate(
                    input_ids=context,
                    max_length=max_length,
                    stopping_criteria=criteria,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=stop_ids,
                    use_cache=True,
                    **kw,
                )
            rows = decoding.row_lengths(out[:, length:], stop_ids, answer.at if answer is not None else None)
            strings = [c for c in criteria if hasattr(c, "done_tracker")]  # lm-eval's until strings
            for row, (ctx, (n, cut)) in enumerate(zip(self._contexts, rows)):
                self.cut_offs.setdefault(ctx, []).append(cut and not any(c.done_tracker[row] for c in strings))
                self.generated_tokens += n
            return out

        def generate_until(self, requests, disable_tqdm: bool = False):
            fmt = self.answer_format
            self.queued = {}  # see start_batch
            for r in requests:
                self.queued.setdefault(r.args[0], deque()).append(r.doc_id)
            return [
                decoding.trim(s, fmt or "", fmt is not None) for s in super().generate_until(requests, disable_tqdm)
            ]

        def start_batch(self, contexts: list[str]) -> bool:
            """Count the batch and note its questions; seed it and return True when this job generates it.

            Which question a prompt of the batch is: lm-eval sorts requests with Python's stable sort, so
            among equal prompts (a question's repeats, or two questions asked alike) the batches meet them
            in request order; the first request still queued under that prompt is the one.
            """
            index, self.batch = self.batch, self.batch + 1
            docs = [self.queued[c].popleft() for c in contexts]
            self.skipping = self.keep is not None and index not in self.keep
            (self.skipped_docs if self.skipping else self.generated_docs).update(docs)
            if not self.skipping:
                torch.manual_seed(self.batch_seed(index))  # type: ignore[misc]  # set with keep, by apply_batches
            return not self.skipping

    _CLASS["cls"] = RuledHFLM
    return RuledHFLM


def apply_rule(lm, answer_format: str | None) -> None:
    """Set the stage's answer stop on a RuledHFLM and start its records (prompt -> [cut_off per response])."""
    lm.answer_format = answer_format
    lm.cut_offs = {}
    lm.generated_tokens = 0


def apply_batches(lm, batch_seed: Callable[[int], int], keep: range | None) -> None:
    """Seed each of lm-eval's batches by its index (`batch_seed`), and generate only the batches in `keep`
    (a shard's; None: all). Records which questions were generated here and which were left to others."""
    lm.batch_seed, lm.keep, lm.batch = batch_seed, keep, 0
    lm.generated_docs, lm.skipped_docs, lm.queued = set(), set(), {}


def without_zero_temperature(kwargs: dict) -> dict:
    """HFLM._model_generate's handling of temperature: 0 (or unset) with do_sample unset means greedy."""
    kw = dict(kwargs)
    kw["temperature"] = kw.get("temperature", 0.0)
    if kw["temperature"] == 0.0 and kw.get("do_sample") is None:
        kw["do_sample"] = False
    if kw.get("do_sample") is False and kw["temperature"] == 0.0:
        kw.pop("temperature")
    return kw


def cut_off_flags(lm, context: str, n: int) -> list[bool] | None:
    """The cut_off flags of a question's n responses (recorded in generation order); None when not recorded."""
    flags = getattr(lm, "cut_offs", {}).get(context)
    if flags is None or len(flags) < n:
        return None
    taken, lm.cut_offs[context] = flags[:n], flags[n:]
    return taken


def response_counts(rows: list[dict], lm) -> dict:
    """Over all responses: how many, the share cut off at max_new_tokens, the share holding no answer."""
    n = sum(len(r["responses"]) for r in rows)
    cut = [c for r in rows for c in r.get("cut_off", [])]
    return {
        "responses": n,
        "cut_off_share": sum(cut) / n if n and len(cut) == n else None,
        "no_answer_share": sum(a is None for r in rows for a in r["answers"]) / n if n else None,
        "generated_tokens": getattr(lm, "generated_tokens", None),
    }


def mean_metric(xs: list[float]) -> dict:
    """{"accuracy", "stderr"} as lm-eval aggregates a `mean` metric: its mean and mean_stderr
    (lm_eval.api.metrics) over the questions in doc order, with the same operations in the same order;
    stderr None (lm-eval's "N/A") for fewer than two questions. Every accuracy eval reports that lm-eval did not
    compute itself (a sharded stage's join, best-of-k reranking) comes from here, so it reads as lm-eval's."""
    mu = sum(xs) / len(xs)
    stderr = math.sqrt(sum([(x - mu) ** 2 for x in xs]) / (len(xs) - 1)) / math.sqrt(len(xs)) if len(xs) > 1 else None
    return {"accuracy": float(mu), "stderr": stderr}
