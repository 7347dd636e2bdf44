"""PNG curves from a Hugging Face / trl trainer's ``state.log_history``.

Generic on purpose: SFT plots ``loss`` (and ``eval_loss``), GRPO plots ``reward`` and its
components with the same function. Entries without a key, or with a non-finite value, are skipped;
a key that never appears is listed in the legend as "(no data)" so a missing metric is visible
rather than silently absent.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any


def curve_points(log_history: list[dict[str, Any]], key: str, x_key: str = "step") -> tuple[list[float], list[float]]:
    """(x, y) of every entry that has a finite numeric ``key``; x is ``x_key`` or the entry index."""
    xs: list[float] = []
    ys: list[float] = []
    for i, entry in enumerate(log_history):
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        x = entry.get(x_key, i)
        xs.append(float(x) if isinstance(x, (int, float)) else float(i))
        ys.append(float(value))
    return xs, ys


def plot_curves(
    log_history: list[dict[str, Any]],
    keys: list[str],
    out_png: Path | str,
    title: str,
    x_key: str = "step",
    log_y: bool = False,
) -> Path:
    """Plot each of ``keys`` against ``x_key`` (default the optimizer step) into ``out_png``.

    Written atomically (temp file + rename). Returns the path. Uses the non-interactive Agg
    backend, so it works on headless machines and in worker processes.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        plotted = 0
        for key in keys:
            xs, ys = curve_points(log_history, key, x_key)
            if not xs:
                ax.plot([], [], label=f"{key} (no data)")
                continue
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, linewidth=1.5, label=key)
            plotted += 1
        if log_y and plotted:
            ax.set_yscale("log")
        ax.set_xlabel(x_key)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best")
        fig.tight_layout()
        tmp = out_png.with_name(f".{out_png.stem}.tmp-{os.getpid()}.png")
        fig.savefig(tmp, format="png")
        os.replace(tmp, out_png)
    finally:
        plt.close(fig)
    return out_png
