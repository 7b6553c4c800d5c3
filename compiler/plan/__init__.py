"""Spec -> Plan, the compiler's one entry point: a spec with a sweep expands into its variants
(compiler/plan/expand.py), each planned by the planner core (compiler/plan/planner.py); any other spec goes
to the planner directly. Sitting above both keeps them free of each other."""

from __future__ import annotations

from pathlib import Path

from ..spec.schema import Spec
from ..spec.yamlload import Positions
from .expand import expand
from .planner import Plan, plan_spec


def build_plan(spec: Spec, positions: Positions | None = None, file: str = "", root: Path | None = None) -> Plan:
    """Check cross-stage rules and produce jobs in run order; raise SpecError on problems."""
    plan = expand if spec.sweep else plan_spec
    return plan(spec, positions or Positions(), file, root or Path.cwd())
