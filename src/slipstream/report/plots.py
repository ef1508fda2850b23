"""The report's plots, drawn with matplotlib as inline SVG (no JavaScript, no external files)."""

from __future__ import annotations

import io
from typing import Sequence

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
           "#64B5CD"]


def _figure(width: float = 7.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 10, "axes.spines.top": False, "text.parse_math": False,
                         "axes.spines.right": False})
    return plt, plt.subplots(figsize=(width, height))


def _svg(plt, fig) -> str:
    buf = io.StringIO()
    fig.tight_layout()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def pareto(names: Sequence[str], speed: Sequence[float], accuracy_loss: Sequence[float], front: Sequence[str],
           speed_label: str, loss_label: str) -> str:
    """Accuracy cost against speed: one point per variant, the frontier joined by a line."""
    plt, (fig, ax) = _figure()
    for i, (n, x, y) in enumerate(zip(names, speed, accuracy_loss)):
        on = n in front
        ax.scatter([x], [y], s=90 if on else 45, color=PALETTE[i % len(PALETTE)], edgecolor="black" if on else "none",
                   zorder=3, label=n)
        ax.annotate(n, (x, y), textcoords="offset points", xytext=(6, 6 + 11 * (i % 3)), fontsize=8,
                    arrowprops={"arrowstyle": "-", "color": "#999", "lw": 0.5})
    if max(abs(v) for v in accuracy_loss) > 10:  # keep small differences readable beside a large one
        ax.set_yscale("symlog", linthresh=2.0)
    pts = sorted((x, y) for n, x, y in zip(names, speed, accuracy_loss) if n in front)
    if len(pts) > 1:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color="black", lw=1, ls="--", zorder=2,
                label="Pareto frontier")
    ax.set_xlabel(speed_label)
    ax.set_ylabel(loss_label)
    ax.grid(alpha=0.3)
    ax.set_title("Accuracy cost against speed (down and right is better)")
    return _svg(plt, fig)


def bars(names: Sequence[str], values: Sequence[float], label: str, title: str, fmt: str = "{:.0f}") -> str:
    plt, (fig, ax) = _figure(7.0, 0.5 + 0.45 * len(names))
    y = list(range(len(names)))[::-1]
    ax.barh(y, values, color=[PALETTE[i % len(PALETTE)] for i in range(len(names))])
    ax.set_yticks(y, names)
    for yi, v in zip(y, values):
        ax.text(v, yi, " " + fmt.format(v), va="center", fontsize=8)
    ax.set_xlabel(label)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _svg(plt, fig)


def distributions(names: Sequence[str], samples: Sequence[Sequence[float]], label: str, title: str) -> str:
    plt, (fig, ax) = _figure(7.0, 0.5 + 0.5 * len(names))
    if not any(samples):
        ax.text(0.5, 0.5, "no per-token samples stored for these benchmarks", ha="center", transform=ax.transAxes)
    data = [list(s) if s else [float("nan")] for s in samples]
    parts = ax.boxplot(data, orientation="horizontal", tick_labels=list(names), showfliers=True, patch_artist=True,
                       whis=(5, 95))
    for i, box in enumerate(parts["boxes"]):
        box.set_facecolor(PALETTE[i % len(PALETTE)])
        box.set_alpha(0.6)
    ax.invert_yaxis()
    ax.set_xlabel(label)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _svg(plt, fig)
