# distillc's workflow entry point. `distillc build specs/<name>.yaml` renders build/<name>/;
# this file runs the latest build (or `snakemake --config spec=<name>` for another one).
from pathlib import Path

_spec = config.get("spec") or Path("build/LATEST").read_text().strip()


# Resolved against the working directory (snakemake -d), not this file's folder.
include: str(Path(f"build/{_spec}/workflow.smk").resolve())


# Snakemake's default target must be a rule of this file, not of an included one.
rule all:
    input:
        DISTILLC_TARGETS,
    default_target: True
