"""PNG charts of benchmark comparisons: one horizontal bar per contender at its median, a line from its
fastest to its slowest run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

OURS, THEIRS = "#1a73e8", "#9aa0a6"


def spread_chart(path: Path, title: str, unit: str, bars: list[tuple[str, dict[str, Any]]]) -> None:
    """Draw `bars` ([(label, spread)], a spread from bench.common.spread) into `path`; Tasklane's own bars
    (labels starting with "tasklane") in blue."""
    labels = [label for label, _ in bars]
    medians = [value["median"] for _, value in bars]
    below = [value["median"] - value["min"] for _, value in bars]
    above = [value["max"] - value["median"] for _, value in bars]
    figure, axes = plt.subplots(figsize=(7.5, 0.55 * len(bars) + 1.3), dpi=100)
    rows = list(range(len(bars)))[::-1]
    axes.barh(rows, medians, xerr=[below, above], capsize=4, height=0.6,
              color=[OURS if label.startswith("tasklane") else THEIRS for label in labels])
    axes.set_yticks(rows, labels)
    axes.set_xlabel(f"{unit} (bar: median; line: min to max)")
    axes.set_title(title, loc="left", fontsize=11)
    largest = max(value["max"] for _, value in bars) or 1.0
    for row, median in zip(rows, medians, strict=True):
        axes.text(median + largest * 0.02, row + 0.22, f"{median:,.0f}" if median >= 100 else f"{median:,.2f}",
                  va="center", fontsize=9)
    axes.set_xlim(0, largest * 1.15)
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
