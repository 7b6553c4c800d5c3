"""The names of the lm-eval filters an eval stage's task defines: one home for the template that
writes them (compiler/templates/lm_eval_task.yaml.j2), the eval stage that reads its metrics by
them and the report that shows them. A filter names one way of turning responses into an answer."""

from __future__ import annotations

GREEDY = "greedy"  # one greedy response per question
SINGLE = "single"  # the first of several sampled responses
MAJORITY = "majority"  # the vote over all sampled responses (runtime.lib.answers.vote)
# The sampled response a reward model scores highest (an eval stage's `rerank`; runtime.lib.rerank). Not one of
# lm-eval's filters: lm-eval has no reward model, so the eval stage reads lm-eval's logged responses, scores
# them and reports this under the same name, metric and strict twin as the filters lm-eval computed.
RERANK = "rerank"
PRIMARY = (GREEDY, SINGLE)  # the filter behind an eval's "accuracy", in order of preference
# Each filter has a strict twin, "<filter>_strict" ("greedy_strict"): the same responses read by the strict
# reading alone (runtime.lib.answers.extract_strict, the first complete "#### N"), as lm-eval's gsm8k scores
# strict-match beside flexible-extract.
STRICT_SUFFIX = "_strict"

# As the template sees them: filters.<name>
NAMES = {"greedy": GREEDY, "single": SINGLE, "majority": MAJORITY, "strict_suffix": STRICT_SUFFIX}


def strict(name: str) -> str:
    """The strict twin of filter `name`."""
    return name + STRICT_SUFFIX
