"""The report's curves as PNG bytes: matplotlib's object API on the Agg canvas.

pyplot is never imported, so no global backend is chosen and nothing needs a display.
"""

from __future__ import annotations

import io
import re

from ..errors import WenlanError

__all__ = ["loss_curve", "lr_curve", "recall_curve"]

_RECALL_KEY = re.compile(r"^(t2i|i2t)_r(\d+)$")


def _figure(height: float = 3.0):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise WenlanError(
            "wenlan report draws its curves with matplotlib, a dependency of wenlan that is missing from this "
            "environment: pip install 'matplotlib>=3.7'."
        ) from None
    figure = Figure(figsize=(6.4, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _style(axes, title: str, ylabel: str) -> None:
    axes.set_title(title, fontsize=11, loc="left")
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _marker(n: int) -> str | None:
    return "o" if n <= 25 else None


def _ema(values: list[float], weight: float) -> list[float]:
    out, last = [], values[0]
    for v in values:
        last = weight * last + (1 - weight) * v
        out.append(last)
    return out


def loss_curve(train: list[dict]) -> bytes | None:
    """Training loss against step (plus a smoothed line when there are many points)."""
    points = [(e["step"], float(e["loss"])) for e in train if isinstance(e.get("loss"), (int, float))]
    if not points:
        return None
    steps, losses = zip(*points)
    figure = _figure()
    axes = figure.add_subplot()
    many = len(points) >= 20
    axes.plot(steps, losses, color="#4c72b0", alpha=0.35 if many else 1.0, marker=_marker(len(points)), label="loss")
    if many:
        axes.plot(steps, _ema(list(losses), 0.9), color="#4c72b0", label="smoothed (EMA 0.9)")
        axes.legend(loc="upper right", fontsize=8)
    _style(axes, "Training loss", "loss")
    return _png(figure)


def lr_curve(train: list[dict]) -> bytes | None:
    """Learning rate against step."""
    points = [(e["step"], float(e["lr"])) for e in train if isinstance(e.get("lr"), (int, float))]
    if not points:
        return None
    steps, rates = zip(*points)
    figure = _figure(2.6)
    axes = figure.add_subplot()
    axes.plot(steps, rates, color="#dd8452", marker=_marker(len(points)))
    axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    _style(axes, "Learning rate", "lr")
    return _png(figure)


def recall_curve(evals: list[dict]) -> bytes | None:
    """Recall@K of every evaluation against step, both directions, and the mean."""
    if not evals:
        return None
    splits = list(dict.fromkeys(str(e.get("split")) for e in evals))
    figure = _figure(3.4)
    axes = figure.add_subplot()
    colours = {"t2i": "#4c72b0", "i2t": "#c44e52"}
    styles = ["-", "--", ":", "-."]
    for split in splits:
        rows = [e for e in evals if str(e.get("split")) == split]
        prefix = f"{split} " if len(splits) > 1 else ""
        keys = sorted({k for e in rows for k in e if _RECALL_KEY.match(k)},
                      key=lambda k: (_RECALL_KEY.match(k).group(1) != "t2i", int(_RECALL_KEY.match(k).group(2))))
        for key in keys:
            direction, k = _RECALL_KEY.match(key).groups()
            rank = sorted({int(_RECALL_KEY.match(x).group(2)) for x in keys if x.startswith(direction)}).index(int(k))
            pts = [(e["step"], float(e[key])) for e in rows if isinstance(e.get(key), (int, float))]
            if pts:
                xs, ys = zip(*pts)
                label = f"{prefix}{'text→image' if direction == 't2i' else 'image→text'} R@{k}"
                axes.plot(xs, ys, color=colours[direction], linestyle=styles[rank % len(styles)],
                          marker=_marker(len(pts)), markersize=4, label=label)
        pts = [(e["step"], float(e["mean_recall"])) for e in rows if isinstance(e.get("mean_recall"), (int, float))]
        if pts:
            xs, ys = zip(*pts)
            axes.plot(xs, ys, color="black", linewidth=2.2, marker=_marker(len(pts)), label=f"{prefix}mean recall")
    axes.set_ylim(bottom=0)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    _style(axes, f"Retrieval recall ({', '.join(splits)})", "recall (%)")
    return _png(figure)
