"""The report's formatting helpers, shared by its sections (report_page, report_seeds): how a number,
an interval, a table, a section and a plot are written. One home, so no section imports another's."""

from __future__ import annotations

import base64
import io

from compiler.spec.stagekind import Curve
from compiler.spec.stages import STAGE_CLASSES, all_roles

NAMES = {name: role.label for name, role in all_roles().items()}  # role -> its name in the report
CURVES: dict[str, Curve] = {kind: cls.curve for kind, cls in STAGE_CLASSES.items() if cls.curve is not None}


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def signed(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def ci(pair) -> str:
    return "n/a" if not pair or pair[0] is None else f"[{100 * pair[0]:.1f}, {100 * pair[1]:.1f}]"


def pvalue(p) -> str:
    return "n/a" if p is None else (f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}")


def num(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def table(headers: list[str], rows: list[list], highlight: list[bool] | None = None) -> dict:
    return {
        "headers": headers,
        "rows": [[str(c) for c in r] for r in rows],
        "highlight": highlight or [False] * len(rows),
    }


def section(title: str, notes=(), tables=(), plots=(), env: bool = False) -> dict:
    return {
        "title": title,
        "notes": list(notes),
        "tables": [t for t in tables if t["rows"]],
        "plots": list(plots),
        "env": env,
    }


def png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})  # no version stamp: stable bytes
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
