"""The names of the lm-eval filters an eval stage's task defines: one home for the template that
writes them (compiler/templates/lm_eval_task.yaml.j2), the eval stage that reads its metrics by
them and the report that shows them. A filter names one way of turning responses into an answer."""
from __future__ import annotations

GREEDY = "greedy"       # one greedy response per question
SINGLE = "single"       # the first of several sampled responses
MAJORITY = "majority"   # the vote over all sampled responses (runtime.answers.vote)
PRIMARY = (GREEDY, SINGLE)   # the filter behind an eval's "accuracy", in order of preference

NAMES = {"greedy": GREEDY, "single": SINGLE, "majority": MAJORITY}   # as the template sees them: filters.<name>
