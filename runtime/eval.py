"""Eval stage: benchmark one model with lm-eval, on the spec's test split or on a hub task.

lm-eval does the generation and the scoring, so that numbers are comparable with
what others get from the same harness. The local task YAML is rendered by the
compiler (build/<spec>/lm_eval/<id>/); this stage writes the questions file it
points at, runs lm-eval, and turns its logged samples into the project's
metrics.json / samples.jsonl contract. Eval may read gold answers: it is the end
of the pipeline, and nothing downstream trains on its outputs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from compiler.spec.contract import StageConfig
from compiler.spec.lm_eval_filters import MAJORITY, PRIMARY
from compiler.spec.stages import EvalStage

from .lib import answers, decoding, eval_lm, rerank, verifier
from .lib import task as taskdata
from .lib.common import (
    StageError,
    atomic_write_json,
    derive_seed,
    log,
    progress,
    read_json,
    read_jsonl,
    start,
    torch_setup,
    write_jsonl,
)
from .lib.shards import batches_here, join_benchmarks
from .lib.startup import settle

METRICS = ("exact_match", "acc")  # generate_until tasks score exact_match; loglikelihood ones acc
HF_WITH_PROGRESS = "distillc-hf"  # lm-eval's "hf" model that reports questions answered
_COUNTING: dict = {}  # the stage config that model reports to, its rule, the built model
DTYPE_NAMES = {"torch.float32": "float32", "torch.bfloat16": "bfloat16", "torch.float16": "float16"}


def write_questions(cfg: StageConfig, stage: EvalStage) -> list[dict]:
    """The test questions, with targets, where the rendered task YAML reads them.

    The YAML holds an absolute path (lm-eval resolves relative ones against the
    current directory): if it does not point into this stage's folder, the build
    belongs to another checkout, and writing elsewhere would evaluate stale data.
    """
    rows = taskdata.gold(cfg.task, "test", cfg.spec_seed)[: stage.limit]
    if not rows:
        raise StageError("eval: the task has no test questions (set task.test or task.synthetic.test_size)")
    task_yaml = read_task_yaml(cfg.build_input("lm_eval_task"))
    path = Path(task_yaml["dataset_kwargs"]["data_files"]["test"])
    expected = (Path(cfg.stage_dir) / "questions.jsonl").resolve()  # a shard's out_dir is inside it
    if path.resolve() != expected:
        raise StageError(
            f"eval: {cfg.build_input('lm_eval_task')} reads {path}, not {expected}: "
            "it was built in another folder; run `distillc build` again here"
        )
    questions = [
        {"question_id": r["id"], "prompt": taskdata.messages(r, cfg.task)[-1]["content"], "target": r["target"]}
        for r in rows
    ]
    write_jsonl(path, questions)
    check_lengths(cfg, stage, rows)
    return questions


def read_task_yaml(path) -> dict:
    """The rendered task YAML as data; its `!function` tags (lm-eval's) are read as their plain names."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))  # type: ignore[arg-type]  # a scalar tag
    return yaml.load(Path(path).read_text(), Loader=Loader)


def check_lengths(cfg: StageConfig, stage: EvalStage, rows: list[dict]) -> None:
    """Refuse prompts that do not fit: lm-eval would cut them from the left (losing BOS and
    the question's start) with only a log warning, and score the damaged prompt."""
    from .lib.context import check_context
    from .lib.models import load_tokenizer

    ref = cfg.models["model"]
    tok = load_tokenizer(ref, cfg.task, cfg.spec_seed)
    if not tok.chat_template:
        raise StageError(f"eval: model {ref.name!r} has no chat template; eval and generate both prompt through it")
    check_context(ref, tok, cfg.task, rows, stage.max_new_tokens, "max_new_tokens")


def make_lm(cfg: StageConfig, stage: EvalStage, device, dtype):
    """(model, model_args) for simple_evaluate: lm-eval's hf model by path, or an in-memory HFLM for
    `init:` models (models.py rebuilds them from the seed); either one counts its progress.

    Paths go through lm-eval's own loader, inside simple_evaluate as before (same seeding order),
    so its config records what was loaded.
    """
    ref = cfg.models["model"]
    _COUNTING.pop("lm", None)  # the lm-eval model of an earlier stage in this process
    if ref.source == "init":
        from .lib.models import load_causal_lm

        model, tok = load_causal_lm(ref, cfg.task, cfg.spec_seed, dtype=dtype)
        lm = eval_lm.ruled_hflm()(pretrained=model.to(device).eval(), tokenizer=tok, batch_size=stage.batch_size)
        eval_lm.apply_rule(lm, answer_format(cfg, stage))
        eval_lm.apply_batches(lm, *_COUNTING["batches"])
        count_progress(lm, cfg)
        _COUNTING["lm"] = lm
        return lm, None
    from .lib.model_folders import local_folder

    where = local_folder(ref)  # a GGUF or pruned model: its folder in the model cache, made once
    args = {
        "pretrained": str(Path(where).resolve()) if Path(where).is_dir() else where,
        "dtype": DTYPE_NAMES[str(dtype)],
        "trust_remote_code": ref.trust_remote_code,
    }
    if ref.revision:
        args["revision"] = ref.revision
    return hf_with_progress(cfg, stage), args


def answer_format(cfg: StageConfig, stage: EvalStage) -> str | None:
    """The format whose first complete answer ends a response, or None (the stage's stop_at_answer; the
    spec's own test split only: a hub task's answers are read by its own filters, which may look further)."""
    fmt = cfg.task.format
    return fmt if stage.hub_task is None and decoding.answer_stop(fmt, stage.stop_at_answer) else None


def hf_with_progress(cfg: StageConfig, stage: EvalStage) -> str:
    """lm-eval's "hf" model class under the decoding rule (eval_lm) with count_progress in its constructor,
    registered once per process (lm-eval refuses a second class under one name; tests run several stages
    in one process). The instance lm-eval builds is kept for its cut-off records."""
    _COUNTING["cfg"], _COUNTING["answer_format"] = cfg, answer_format(cfg, stage)
    if not _COUNTING.get("registered"):
        from lm_eval.api.registry import register_model

        class ProgressHFLM(eval_lm.ruled_hflm()):  # type: ignore[misc]  # lm-eval's class, made when first needed
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                eval_lm.apply_rule(self, _COUNTING["answer_format"])
                eval_lm.apply_batches(self, *_COUNTING["batches"])
                count_progress(self, _COUNTING["cfg"])
                _COUNTING["lm"] = self

        register_model(HF_WITH_PROGRESS)(ProgressHFLM)
        _COUNTING["registered"] = True
    return HF_WITH_PROGRESS


def count_progress(lm, cfg: StageConfig, updates: int = 100) -> None:
    """Report questions answered into progress.json (and the terminal) while lm-eval runs.

    lm-eval has no progress hook, but every LM hands each finished request to its cache hook
    (`add_partial`, a no-op unless lm-eval's request cache is on): count them there. The request
    methods are wrapped only to learn how many requests (and questions: repeats and answer options
    make several requests per question) a call brings. Nothing lm-eval computes changes.
    At most `updates` records per stage, by count (not by time).
    """
    from lm_eval.api.model import CacheHook

    class Counter(CacheHook):
        def __init__(self) -> None:
            super().__init__(None)
            self.done, self.total, self.shown, self.requests = 0, 0, 0, 0
            self.docs: set[tuple] = set()

        def add_partial(self, attr, req, res) -> None:
            if getattr(lm, "skipping", False):  # another shard's batch: nothing was generated
                return
            self.done += 1
            questions = len(self.docs) * self.total // max(self.requests, 1)  # a shard's share
            answered = min(self.done, self.total) * questions // max(self.total, 1)
            if answered - self.shown >= max(1, questions // updates) or (answered == questions > self.shown):
                self.shown = answered
                progress(cfg, answered, questions, "questions")

    counter = Counter()
    lm.set_cache_hook(counter)
    for name in ("generate_until", "loglikelihood", "loglikelihood_rolling"):

        def counted(requests, *args, _method=getattr(lm, name), **kwargs):  # noqa: B008 (binds this loop's method)
            counter.requests += len(requests)
            counter.total += kept_requests(lm, len(requests))
            counter.docs |= {(r.task_name, r.doc_id) for r in requests}
            return _method(requests, *args, **kwargs)

        setattr(lm, name, counted)


def quiet_git_hash() -> str | None:
    """lm-eval's git hash of the current folder, without git's `fatal: not a git repository`
    on stderr when the run is not inside a checkout (lm-eval lets git print to the log)."""
    try:
        return (
            subprocess.run(
                ["git", "describe", "--always"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def run_lm_eval(cfg: StageConfig, stage: EvalStage, lm, model_args, device) -> tuple[str, dict]:
    """Run lm-eval on the local task (or the hub task); return (task name, result dict)."""
    import lm_eval
    import lm_eval.evaluator
    from lm_eval.tasks import TaskManager

    lm_eval.evaluator.get_git_commit_hash = quiet_git_hash
    settle()

    if stage.hub_task is None:
        task_file = Path(cfg.build_input("lm_eval_task"))
        name, manager = task_file.stem, TaskManager(include_path=str(task_file.parent), include_defaults=False)
        extra = {}
    else:  # the task's own YAML decides prompts and filters; the stage sets length, temperature and shots
        name, manager = stage.hub_task, TaskManager()
        gen: dict[str, object] = {"max_gen_toks": stage.max_new_tokens}
        gen |= {"do_sample": True, "temperature": stage.temperature} if stage.temperature > 0 else {"do_sample": False}
        extra = {"num_fewshot": stage.num_fewshot, "limit": stage.limit, "gen_kwargs": gen}
    seed = cfg.seed
    try:
        result = lm_eval.simple_evaluate(
            model=lm,
            model_args=model_args,
            tasks=[name],
            task_manager=manager,
            device=device.type,
            batch_size=stage.batch_size,
            log_samples=True,
            apply_chat_template=True,
            system_instruction=cfg.task.system_prompt or None,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            **extra,
        )
    except (ConnectionError, OSError) as exc:
        if stage.hub_task is None:
            raise
        raise StageError(
            f"eval: hub_task {name!r} could not fetch its dataset (or the model) from the Hugging Face "
            f"hub: {type(exc).__name__}: {exc}. Hub tasks need network access (unset HF_HUB_OFFLINE and "
            "HF_DATASETS_OFFLINE) or the dataset already in the local cache."
        ) from None
    if name not in result.get("results", {}):
        raise StageError(f"eval: lm-eval returned no results for {name!r} (a task group? name one task)")
    return name, result


def scores(results: dict) -> tuple[str, dict]:
    """(metric name, {filter: {"accuracy", "stderr"}}) from lm-eval's "metric,filter" keys."""
    metric = next((m for m in METRICS if any(k.startswith(m + ",") for k in results)), None)
    if metric is None:
        raise StageError(f"eval: the task reports none of {METRICS}: {sorted(results)}")
    out = {}
    for key, value in results.items():
        name, _, filt = key.partition(",")
        if name == metric and filt:
            stderr = results.get(f"{metric}_stderr,{filt}")
            out[filt] = {
                "accuracy": float(value),
                "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
            }
    return metric, out


def primary(filters) -> str:
    """The filter behind "accuracy": greedy or single-sample, else the task's first (e.g. strict-match)."""
    return next((f for f in PRIMARY if f in filters), next(iter(filters)))


def sample_rows(
    logged: list[dict], metric: str, first: str, questions: list[dict] | None, task_name: str, fmt: str, lm=None
) -> list[dict]:
    """One row per question from lm-eval's logged samples (one entry per question and filter).

    Responses come from `resps` (all repeats); "correct" is lm-eval's own score
    under the primary filter, so accuracy == mean(correct) by construction.
    "answers" are runtime.lib.answers.extract's: the same code lm-eval scored with (the local task's
    filters load it), and the code every other stage reads answers with. "cut_off" (one flag per
    response: reached max_new_tokens without a stop) is what the lm-eval model `lm` recorded
    while generating (eval_lm); absent where it recorded none.
    """
    by_doc: dict[int, dict[str, dict]] = {}
    for s in logged:
        by_doc.setdefault(s["doc_id"], {})[s["filter"]] = s
    rows = []
    for doc_id in sorted(by_doc):
        entries = by_doc[doc_id]
        s = entries[first]
        responses = [r if isinstance(r, str) else str(r) for inst in s["resps"] for r in inst]
        qid = questions[doc_id]["question_id"] if questions is not None else f"{task_name}-{doc_id}"
        row = {
            "question_id": qid,
            "target": str(s["target"]),
            "responses": responses,
            "answers": [answers.extract(r, fmt) for r in responses],
            "correct": bool(s[metric]),
        }
        cut = eval_lm.cut_off_flags(lm, s["arguments"][0][0], len(responses)) if lm is not None else None
        if cut is not None:
            row["cut_off"] = cut
        if MAJORITY in entries:
            row["majority_correct"] = bool(entries[MAJORITY][metric])
        rows.append(row)
    return rows


def best_of_k(cfg: StageConfig, stage: EvalStage, rows: list[dict], device, dtype) -> tuple[dict, dict]:
    """(filters, record) of best-of-k reranking (`rerank`: a reward_model stage; runtime/lib/rerank.py): each
    row's k responses scored by the reward model, the top-scored one kept (ties: the first) and judged;
    the rows gain each response's score, the pick and its correctness. Prompts are the chat prompts lm-eval
    sampled with (the task's system prompt, then the question), as the reward_model stage scores them."""
    prompts = {q["id"]: taskdata.messages(q, cfg.task) for q in taskdata.questions(cfg.task, "test", cfg.spec_seed)}
    path = cfg.input("rerank")
    values = rerank.score(path, [prompts[r["question_id"]] for r in rows], rows, stage.batch_size, device, dtype)
    record = {"reward_model": cfg.upstream["rerank"][0], "head": "verifier" if verifier.saved(path) else "scalar"}
    log(f"{cfg.id}: scored {sum(map(len, values))} responses with reward model {record['reward_model']!r}")
    return rerank.judge(rows, values, cfg.task.format), record | {"k": stage.samples}


def portable(model_args: dict | None) -> dict | None:
    """lm-eval's model_args as metrics.json records them: a folder inside the run's root or the model cache
    is written relative to it (`runs/<spec>/...`, `$DISTILLC_CACHE/...`), so that the same run in another
    folder or with another cache writes the same bytes; a hub id stays as it is."""
    if not model_args or not Path(str(model_args.get("pretrained", ""))).is_absolute():
        return model_args
    where = Path(model_args["pretrained"])
    from .lib.model_folders import cache_root

    for root, label in ((cache_root(), "$DISTILLC_CACHE"), (Path.cwd(), None)):
        if where.is_relative_to(root.resolve()):
            rel = where.relative_to(root.resolve()).as_posix()
            return model_args | {"pretrained": f"{label}/{rel}" if label else rel}
    return model_args


def provenance(result: dict, name: str, model_args: dict | None, stage: EvalStage) -> dict:
    """A small record of what lm-eval ran: versions, seeds, the task hash as lm-eval computes it."""
    from lm_eval.utils import hash_string

    config = result.get("config", {})
    logged = result["samples"][name]
    keep = (
        "batch_size",
        "random_seed",
        "numpy_seed",
        "torch_seed",
        "fewshot_seed",
        "limit",
        "gen_kwargs",
        "model_num_parameters",
        "model_revision",
        "model_sha",
    )
    return {
        "lm_eval_version": result.get("lm_eval_version"),
        "transformers_version": result.get("transformers_version"),
        "task_version": result.get("versions", {}).get(name),
        "task_hash": hash_string("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in logged)),
        "n_shot": result.get("n-shot", {}).get(name),
        "n_samples": result.get("n-samples", {}).get(name),
        "model_args": portable(model_args),
        "model_dtype": str(config.get("model_dtype")),
        "config": {k: config.get(k) for k in keep},
        "eot_token_id": result.get("eot_token_id"),
        "max_length": result.get("max_length"),
        "tokenizer_bos_token": result.get("tokenizer_bos_token"),
        "tokenizer_eos_token": result.get("tokenizer_eos_token"),
        "git_hash": result.get("git_hash"),
        "repeats": stage.samples,
    }


def main(argv: list[str] | None = None) -> None:
    cfg, stage, args = start(argv, "eval")
    if cfg.joins:  # a sharded stage's join: no model, no lm-eval run
        join(cfg, stage)
        return
    device, dtype = torch_setup(cfg.seed, args.threads, stage.device, stage.precision)
    questions = write_questions(cfg, stage) if stage.hub_task is None else None
    _COUNTING["batches"] = batch_plan(cfg, stage, questions)
    lm, model_args = make_lm(cfg, stage, device, dtype)
    progress(cfg, 0, len(questions) if questions is not None else stage.limit, "questions")
    name, result = run_lm_eval(cfg, stage, lm, model_args, device)
    built = _COUNTING.get("lm")  # the model lm-eval generated with: its cut-off records
    metric, filters, logged = scored(cfg, result, name, questions, built)
    first = primary(filters)
    rows = sample_rows(logged, metric, first, questions, name, cfg.task.format, built)
    reranked = best_of_k(cfg, stage, rows, device, dtype) if stage.rerank else None  # not sharded: refused
    if reranked:
        filters |= reranked[0]
    metrics = record(cfg, name, metric, filters, rows, eval_lm.response_counts(rows, built))
    if reranked:
        metrics["rerank"] = reranked[1]
    metrics["lm_eval"] = provenance(result, name, model_args, stage)
    if cfg.shard is not None:  # what the join needs to score the whole stage as one job does
        metrics["shard"] = shard_part(cfg, logged, metric)
    progress(cfg, len(rows), len(rows), "questions")
    write_jsonl(cfg.outputs["samples"], rows)
    atomic_write_json(cfg.outputs["metrics"], metrics)
    log(
        f"{cfg.id}: {name} {first} {metric} = {metrics['accuracy']:.4f} on {len(rows)} questions"
        + "".join(f"; {f} {v['accuracy']:.4f}" for f, v in filters.items() if f != first)
    )


def record(cfg: StageConfig, name: str, metric: str, filters: dict, rows: list[dict], counts: dict) -> dict:
    """metrics.json, but for its lm-eval provenance: one record, written by one job or by the join."""
    first = primary(filters)
    return {
        "model": cfg.models["model"].name,
        "stage": cfg.id,
        "task": name,
        "n": len(rows),
        "accuracy": filters[first]["accuracy"],
        "stderr": filters[first]["stderr"],
        "metric": metric,
        "filter": first,
        "metrics": filters,
        **counts,
    }


# ----------------------------------------------------------------------------- shards (compiler/spec/shards.py)
def batch_plan(cfg: StageConfig, stage: EvalStage, questions: list[dict] | None) -> tuple:
    """(seed of lm-eval's batch i, the batches this job generates) for eval_lm.apply_batches. Every batch has
    its own seed, sharded or not, so that a shard samples its batches as one job does; greedy decoding
    draws nothing. A shard generates its contiguous range of the batches (lm-eval batches requests:
    `samples` per question)."""
    keep = None
    if cfg.shard is not None:
        assert questions is not None, "the compiler refuses shards on a hub task"
        keep = batches_here(cfg, len(questions) * stage.samples, stage.batch_size)
    return (lambda i: derive_seed(cfg.seed, cfg.id, "eval batch", i)), keep


def kept_requests(lm, requests: int) -> int:
    """How many of `requests` fall in the batches this job generates (all, unless it is a shard)."""
    keep = getattr(lm, "keep", None)
    if keep is None:
        return requests
    size = int(lm.batch_size)
    return max(0, min(requests, keep.stop * size) - keep.start * size)


def scored(cfg: StageConfig, result: dict, name: str, questions, lm) -> tuple[str, dict, list[dict]]:
    """(metric, {filter: accuracy and stderr}, logged samples) of the questions this job answered.

    On the spec's own test split the scores are computed from lm-eval's per-question scores (doc_scores,
    filter_scores: lm-eval's own formulas, in its order, so the same numbers to the bit), because a join
    must score the questions of all its shards as one job would. A shard keeps only its questions.
    """
    logged = result["samples"][name]
    metric, filters = scores(result["results"][name])
    if questions is None:  # a hub task: lm-eval's own aggregates (any metric, any aggregation)
        return metric, filters, logged
    if cfg.shard is not None:
        clash = lm.generated_docs & lm.skipped_docs
        if clash:  # batch_size is a multiple of samples under shards: a question's repeats share a batch
            raise StageError(f"eval: question {min(clash)}'s samples fell in two shards' batches")
        logged = [s for s in logged if s["doc_id"] in lm.generated_docs]
    return metric, filter_scores(doc_scores(logged, metric)), logged


def doc_scores(logged: list[dict], metric: str) -> dict[str, dict[int, float]]:
    """{filter: {doc id: the question's score}} from lm-eval's logged samples."""
    out: dict[str, dict[int, float]] = {}
    for s in logged:
        out.setdefault(s["filter"], {})[s["doc_id"]] = s[metric]
    return out


def filter_scores(by_filter: dict[str, dict[int, float]]) -> dict[str, dict]:
    """{filter: {"accuracy", "stderr"}} over the questions in doc order, as lm-eval aggregates them
    (eval_lm.mean_metric)."""
    return {filt: eval_lm.mean_metric([by_doc[d] for d in sorted(by_doc)]) for filt, by_doc in by_filter.items()}


def shard_part(cfg: StageConfig, logged: list[dict], metric: str) -> dict:
    """What a shard's metrics.json adds for the join: its questions (doc ids, the order of its samples.jsonl)
    and each filter's score of each."""
    by_filter = doc_scores(logged, metric)
    ids = sorted({s["doc_id"] for s in logged})
    return {
        "index": cfg.shard.index,  # type: ignore[union-attr]  # called for a shard
        "count": cfg.shard.count,  # type: ignore[union-attr]
        "doc_ids": ids,
        "scores": {f: [by_doc[d] for d in ids] for f, by_doc in by_filter.items()},
    }


def join(cfg: StageConfig, stage: EvalStage) -> None:
    """A sharded eval's samples.jsonl and metrics.json from its shards': samples in question order, every
    filter scored over all the questions as one job scores them (filter_scores), the shards' lm-eval
    provenance (the same in each: every shard's lm-eval saw the whole task) and their summed tokens."""
    questions = len(taskdata.gold(cfg.task, "test", cfg.spec_seed)[: stage.limit])
    parts = [read_json(p) for p in cfg.shard_inputs("metrics")]
    rows: dict[int, dict] = {}
    by_filter: dict[str, dict[int, float]] = {}
    for path, part in zip(cfg.shard_inputs("samples"), parts):
        ids, samples = part["shard"]["doc_ids"], read_jsonl(path)
        if len(ids) != len(samples) or rows.keys() & set(ids):
            raise StageError(f"{path}: does not match its shard's metrics.json (left by another run?); rerun the shard")
        rows.update(zip(ids, samples))
        for filt, values in part["shard"]["scores"].items():
            by_filter.setdefault(filt, {}).update(zip(ids, values))
    if sorted(rows) != list(range(questions)):
        raise StageError(f"{cfg.id}: the shards answered {len(rows)} of the stage's {questions} questions")
    if any(p["lm_eval"] != parts[0]["lm_eval"] for p in parts):
        raise StageError(f"{cfg.id}: the shards ran different lm-eval setups (versions, task or model); rerun them")
    ordered = [rows[d] for d in range(questions)]
    filters = filter_scores(by_filter)
    tokens = [p.get("generated_tokens") for p in parts]
    counts = eval_lm.response_counts(ordered, None) | {"generated_tokens": None if None in tokens else sum(tokens)}
    metrics = record(cfg, parts[0]["task"], parts[0]["metric"], filters, ordered, counts)
    metrics["lm_eval"] = parts[0]["lm_eval"]
    write_jsonl(cfg.outputs["samples"], ordered)
    atomic_write_json(cfg.outputs["metrics"], metrics)
    join_benchmarks(cfg)
    progress(cfg, questions, questions, "questions")
    log(f"{cfg.id}: joined {len(parts)} shards: {metrics['filter']} {metrics['metric']} = {metrics['accuracy']:.4f}")


if __name__ == "__main__":
    from .lib.common import run_stage

    run_stage(main)
