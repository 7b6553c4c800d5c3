"""The reward sources an rl stage can learn from: the one home of their values, their names in the
report and the model card, and their order on the report's ladder.

`reward: model` is the paper's method (the learned reward model), `majority` the label-free
pseudo-labels themselves, `gold` an oracle upper bound that reads gold answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

RewardValue = Literal["model", "majority", "gold"]  # what `reward:` may say; the first is the default


@dataclass(frozen=True)
class RewardSource:
    value: str
    short: str  # the report's label of an RL student: "RL student (learned RM)"
    ladder_row: str  # the ladder table's row
    card: str  # the model card's "reward:" line


REWARD_SOURCES = {
    s.value: s
    for s in (
        RewardSource(
            "model",
            "learned RM",
            "learned reward model (the paper)",
            "the learned reward model's score (the paper's method)",
        ),
        RewardSource(
            "majority",
            "majority-vote reward",
            "majority-vote pseudo-labels",
            "1 when the answer matches the teacher's majority-vote pseudo-label",
        ),
        RewardSource(
            "gold",
            "gold reward, oracle",
            "gold answers (oracle, upper bound)",
            "1 when the answer matches the gold answer (an ORACLE: an upper bound, not the method)",
        ),
    )
}
assert tuple(REWARD_SOURCES) == get_args(RewardValue), "one RewardSource per RewardValue, in its order"

# The report's ladder, strongest signal first: a rung that does not beat SFT while the one above it
# does locates where the gain is lost.
LADDER: tuple[str, ...] = ("gold", "majority", "model")
assert sorted(LADDER) == sorted(REWARD_SOURCES)
