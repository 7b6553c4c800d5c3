"""Spec -> Plan, the compiler's one entry point: a spec with a sweep expands into its variants
(compiler/expand.py), each planned by the planner core (compiler/planner.py); any other spec goes
to the planner directly. Sitting above both keeps them free of each other."""
from __future__ import annotations

from pathlib import Path

from .expand import expand
from .planner import Plan, plan_spec
from .schema import Spec
from .yamlload import Positions


def build_plan(spec: Spec, positions: Positions | None = None, file: str = "", root: Path | None = None) -> Plan:
    """Check cross-stage rules and produce jobs in run order; raise SpecError on problems."""
    plan = expand if spec.sweep else plan_spec
    return plan(spec, positions or Positions(), file, root or Path.cwd())
