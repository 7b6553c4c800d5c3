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

from ..spec.errors import DistillcError, UsageError

USAGE = "distillc {validate,plan,build,run,status,init,schema} [spec.yaml]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="distillc", description="Compile a distillation spec into a Snakemake workflow."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("validate", "check a spec and report every problem"),
        ("plan", "show the stage DAG and what a run would redo, and why"),
        ("build", "validate and render build/<name>/ for snakemake"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("spec", help="the spec YAML file")
        p.add_argument("--root", default=".", help="workflow root holding build/ and runs/ (default: .)")
    p = sub.add_parser("status", help="where a run stands: each stage's state, progress, ETA and wall time")
    p.add_argument("spec", nargs="?", help="the spec YAML file (default: the latest build under --root)")
    p.add_argument("--root", default=".", help="workflow root holding build/ and runs/ (default: .)")
    p.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        default=None,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until the run is done or has failed",
    )
    p = sub.add_parser("init", help="write a commented starter spec: demo, gsm8k, multiple_choice or paper")
    p.add_argument("starter", nargs="?", default="demo", help="demo (default), gsm8k, multiple_choice or paper")
    p.add_argument("--out", default=None, help="the spec file to write (default: <starter>.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing spec file")
    sub.add_parser("schema", help="print the spec's JSON Schema (for editors)")
    sub.add_parser(
        "run", help="run the latest build: snakemake [args], resuming after a kill with no manual step", add_help=False
    )
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:  # everything after `run` is snakemake's, e.g. --cores 2, --profile X
        from .run import run

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
    except BrokenPipeError:  # `distillc plan spec.yaml | head`: the reader left early; nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141  # what a shell reports for a writer killed by SIGPIPE
    except Exception as exc:  # a bug in distillc, not in the spec: say so, briefly
        if os.environ.get("DISTILLC_DEBUG") == "1":
            raise
        print(
            f"distillc internal error: {type(exc).__name__}: {exc}\n"
            "    hint: rerun with DISTILLC_DEBUG=1 for a traceback, and please report it",
            file=sys.stderr,
        )
        return 1


def _run(args) -> int:
    if args.command == "schema":
        from ..spec.schema import Spec

        print(json.dumps(Spec.model_json_schema(), indent=2))
        return 0
    if args.command == "status":
        return _status(args)
    if args.command == "init":
        from .init import STARTERS, init

        out = Path(args.out or f"{args.starter}.yaml")
        for line in init(args.starter, out, args.force):
            print(f"wrote {line}")
        if args.starter in STARTERS:
            print(f"{args.starter}: {STARTERS[args.starter][0]}\nnext:  distillc build {out}")
        return 0
    from ..plan import build_plan
    from ..plan.load import load_spec_with_positions

    spec, positions = load_spec_with_positions(args.spec)
    root = Path(args.root).resolve()
    plan = build_plan(spec, positions, args.spec, root)
    if args.command == "validate":
        print(f"{args.spec}: ok ({len(plan.jobs)} stages)")
    elif args.command == "plan":
        from .plan import describe

        print(describe(plan, root))
    else:
        from ..plan.render import render

        changed = render(plan, root)
        n = sum(changed.values())
        print(f"built {plan.build_dir}/ from {args.spec}: {len(plan.jobs)} stages, {n} file(s) changed")
        print(f"run it:      {run_command(root)}")
        print(f"or on SLURM: {run_command(root, 'slurm')}")
    return 0


def run_command(root: Path, profile: str | None = None) -> str:
    """The `distillc run` command that runs this build, verbatim from the current folder.

    It runs in the workflow root (its run lock and Snakemake's records live there); a root
    without the project's Snakefile names it explicitly.
    """
    import shlex

    project = Path(__file__).resolve().parents[2]
    cwd, local = Path.cwd().resolve(), (root / "Snakefile").exists()
    how = f"--profile {shlex.quote(str(project / 'profiles' / profile))}" if profile else "--cores 2"
    snakefile = "" if local else f"-s {shlex.quote(str(project / 'Snakefile'))} "
    go = "" if root == cwd else f"cd {shlex.quote(str(root))} && "
    return f"{go}distillc run {snakefile}{how}"


def _status(args) -> int:
    from .status import show

    root = Path(args.root).resolve()
    if args.spec:
        from ..plan.load import load_spec_with_positions

        name = load_spec_with_positions(args.spec)[0].name
    else:
        latest = root / "build" / "LATEST"
        if not latest.exists():
            raise UsageError(
                f"{root}: nothing built here\n    hint: run `distillc build <spec.yaml>` first, "
                "or pass --root <the folder you built in>"
            )
        name = latest.read_text().strip()
    return show(root, name, args.watch)


if __name__ == "__main__":
    sys.exit(main())
