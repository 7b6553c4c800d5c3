"""Where a build and its run live, relative to the workflow root: the one home of the layout.

The planner writes these paths into the plan and the stage configs; a stage finds the build's
files through its stage config (StageConfig.build_file), never by spelling the layout itself.
"""

from __future__ import annotations

LOCK_FILE = "spec.lock.json"  # the resolved spec: what the report and `distillc status` read
TRACKING_FILE = "tracking.json"  # the spec's `tracking:` block; no rule reads it, so it reruns nothing
RESOURCES_FILE = "resources.json"  # each job's scheduler resources, read by the workflow


def build_dir(spec_name: str) -> str:
    return f"build/{spec_name}"


def run_dir(spec_name: str) -> str:
    return f"runs/{spec_name}"
