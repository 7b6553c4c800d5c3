"""`distillc`: validate, plan, build a spec, or print its JSON Schema.

The only place that catches DistillcError: users see `file:line:col: field: message`
lines and an exit code, never a traceback (unless DISTILLC_DEBUG=1).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import DistillcError

USAGE = "distillc {validate,plan,build,schema,run} [spec.yaml]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distillc", description="Compile a distillation spec into a Snakemake workflow.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("validate", "check a spec and report every problem"),
                       ("plan", "show the stage DAG and what a run would redo, and why"),
                       ("build", "validate and render build/<name>/ for snakemake")):
        p = sub.add_parser(name, help=text)
        p.add_argument("spec", help="the spec YAML file")
        p.add_argument("--root", default=".", help="workflow root holding build/ and runs/ (default: .)")
    sub.add_parser("schema", help="print the spec's JSON Schema (for editors)")
    sub.add_parser("run", help="run the latest build: snakemake [args], resuming after a kill with no manual step",
                   add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:   # everything after `run` is snakemake's, e.g. --cores 2, --profile X
        from .runner import run
        return _guard(lambda: run(argv[1:]))
    args = parser.parse_args(argv)
    return _guard(lambda: _run(args))


def _guard(command) -> int:
    """Run a command; users see one message and an exit code, never a traceback."""
    try:
        return command()
    except DistillcError as exc:
        if os.environ.get("DISTILLC_DEBUG") == "1":
            raise
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug in distillc, not in the spec: say so, briefly
        if os.environ.get("DISTILLC_DEBUG") == "1":
            raise
        print(f"distillc internal error: {type(exc).__name__}: {exc}\n"
              "    hint: rerun with DISTILLC_DEBUG=1 for a traceback, and please report it", file=sys.stderr)
        return 1


def _run(args) -> int:
    if args.command == "schema":
        from .schema import Spec
        print(json.dumps(Spec.model_json_schema(), indent=2))
        return 0
    from .load import load_spec_with_positions
    from .plan import build_plan
    spec, positions = load_spec_with_positions(args.spec)
    root = Path(args.root).resolve()
    plan = build_plan(spec, positions, args.spec, root)
    if args.command == "validate":
        print(f"{args.spec}: ok ({len(plan.jobs)} stages)")
    elif args.command == "plan":
        from .status import describe
        print(describe(plan, root))
    else:
        from .render import render
        changed = render(plan, root)
        n = sum(changed.values())
        print(f"built {plan.build_dir}/ from {args.spec}: {len(plan.jobs)} stages, {n} file(s) changed")
        print("run it:  distillc run --cores 2        (or: distillc run --profile profiles/slurm)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
