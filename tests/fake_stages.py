"""Stand-in stage CLIs for tests of the workflow around the stages (plan, run, kill), not of the stages.

`fake_stages(dir)` writes a `runtime` package whose `python -m runtime.<kind> --config X` writes
each declared output with content derived from the config and the input files (so a changed
parameter changes every output downstream, and a revert gives the same bytes again), in well under
a second. Put `dir` first on PYTHONPATH of the snakemake process and its rules run these.
While a file named `hold` exists in the workflow root, the stage named in it writes `held`
and waits: a place to kill a run mid-stage. The real stages are tested in test_pipeline.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from compiler.spec.stages import KINDS  # one stand-in per stage kind, whatever kinds there are

STAGE = '''
import hashlib, pathlib, sys, time, yaml
config = pathlib.Path(sys.argv[sys.argv.index("--config") + 1])
cfg = yaml.safe_load(config.read_text())
hold = pathlib.Path("hold")
if hold.exists() and hold.read_text().strip() == cfg["id"]:
    pathlib.Path("held").write_text(cfg["id"])
    while hold.exists():
        time.sleep(0.1)
digest = hashlib.sha256(config.read_bytes())
for path in sorted(cfg["inputs"].values()):
    p = pathlib.Path(path)
    for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
        if f.is_file() and not f.name.startswith("."):
            digest.update(f.read_bytes())
for name, path in cfg["outputs"].items():
    p = pathlib.Path(path)
    if name == "model":   # the one directory output
        p.mkdir(parents=True, exist_ok=True)
        p = p / "weights.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(digest.hexdigest() + "\\n")
'''


def fake_stages(where: Path) -> dict[str, str]:
    """Write the stand-in `runtime` package under `where`; return the environment that selects it.

    The environment also answers `scontrol` at once: where the slurm extra is installed (the test
    suite installs it) and a SLURM client has no controller, every snakemake start would otherwise
    wait 10 s on it (see pyproject.toml), and these tests start snakemake some 30 times.
    """
    package = where / "runtime"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    for kind in KINDS:
        (package / f"{kind}.py").write_text(STAGE)
    scontrol = where / "bin" / "scontrol"
    scontrol.parent.mkdir(exist_ok=True)
    scontrol.write_text("#!/bin/sh\necho 'scontrol: no controller (test stand-in)' >&2\nexit 1\n")
    scontrol.chmod(0o755)
    path = os.pathsep.join(p for p in (str(where), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PATH": f"{scontrol.parent}{os.pathsep}{os.environ['PATH']}"}
