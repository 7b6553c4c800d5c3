"""The report's formatting helpers, shared by its sections (report_page, report_seeds): how a number,
an interval, a table, a section and a plot are written. One home, so no section imports another's."""

from __future__ import annotations

import base64
import io
import textwrap
from typing import TYPE_CHECKING

from compiler.spec.stagekind import Curve
from compiler.spec.stages import STAGE_CLASSES, all_roles

NAMES = {name: role.label for name, role in all_roles().items()}  # role -> its name in the report
CURVES: dict[str, Curve] = {kind: cls.curve for kind, cls in STAGE_CLASSES.items() if cls.curve is not None}

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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


def label_of(row: dict) -> str:
    """How the report names an eval's model: its label ("RL student (gold reward, oracle)"), else its role's name."""
    return row.get("label") or NAMES.get(row["role"], row["role"])


def table(headers: list[str], rows: list[list], highlight: list[bool] | None = None, fold: str | None = None) -> dict:
    """`fold`: the summary line of a table the HTML page folds away (<details>); Markdown prints it unfolded."""
    return {
        "headers": headers,
        "rows": [[str(c) for c in r] for r in rows],
        "highlight": highlight or [False] * len(rows),
        "fold": fold,
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


# ----------------------------------------------------------------------------- plots
LABEL_CHARS = 44  # a row label longer than this wraps onto more lines (its row grows): the figure stays narrow
ROW_IN, LINE_IN = 0.16, 0.17  # inches per row, plus per line of its longest label: 9-pt text never touches


def hbars(
    labels: list[str],
    values: list[float],
    cis: list[tuple[float | None, float | None]] | None = None,
    *,
    title: str,
    xlabel: str,
    right: list[str] | None = None,
    dots: list[list[float]] | None = None,
    groups: list[str] | None = None,
    xlim: tuple[float, float] = (0, 100),
) -> Figure:
    """A horizontal bar chart, one row per label, top to bottom in the order given: a matplotlib Figure
    (the caller writes it with png()).

    Why horizontal: names such as eval_teacher_sampled, written under vertical bars, run into each
    other; written beside horizontal rows they have a line each, and the figure grows taller (never
    wider) with the number of rows. `cis`: (low, high) per row, drawn as error bars (None: no bar);
    `right`: a text per row on the right axis (the numbers, e.g. "70.6 [66.5, 74.4]"); `dots`: points
    per row (e.g. one per seed); `groups`: a name per row, one colour each, with a legend where there
    are several (e.g. a sweep's settings).
    """
    from matplotlib.figure import Figure

    wrapped = [textwrap.fill(str(x), LABEL_CHARS, break_long_words=False, break_on_hyphens=False) for x in labels]
    lines = max([w.count("\n") + 1 for w in wrapped] + [1])
    fig = Figure(figsize=(8, 1.3 + len(labels) * (ROW_IN + LINE_IN * lines)), layout="constrained")
    ax = fig.subplots()
    ys = list(range(len(labels)))
    err = None
    if cis:
        err = [
            [v - lo if lo is not None else 0 for v, (lo, _) in zip(values, cis)],
            [hi - v if hi is not None else 0 for v, (_, hi) in zip(values, cis)],
        ]
    names = list(dict.fromkeys(groups or [""]))
    colours = [f"C{names.index(g) % 10}" for g in groups] if groups else "#4878a8"
    ax.barh(ys, values, 0.6, xerr=err, capsize=3, color=colours)
    for y, pts in zip(ys, dots or []):
        ax.scatter(pts, [y] * len(pts), s=10, color="black", zorder=3)
    ax.set_yticks(ys, wrapped, fontsize=9)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # the first row on top, as in the tables
    ax.set(xlabel=xlabel, xlim=xlim, title=title)
    ax.grid(axis="x", alpha=0.3)
    if right:
        side = ax.secondary_yaxis("right")
        side.set_yticks(ys, right, fontsize=9)
    if len(names) > 1:
        from matplotlib.patches import Patch

        handles = [Patch(color=f"C{i % 10}", label=g) for i, g in enumerate(names)]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(names)), fontsize=8)
    return fig
