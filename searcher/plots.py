"""PNG figures for the inspection commands (matplotlib: the optional extra `searcher[plot]`)."""

from __future__ import annotations

from pathlib import Path

from .errors import OutputError, PlotUnavailableError
from .inspect import ContextReport, FeatureStats


def _pyplot():
    # matplotlib is optional and slow to import: loaded only when a figure is asked for.
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailableError("plots need matplotlib: pip install 'searcher[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def plot_context(report: ContextReport, path: str | Path) -> Path:
    """One line per pair of occurrences: cosine similarity against layer depth."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(8, 5))
    layers = list(range(len(report.layers)))
    for index, pair in enumerate(report.layers[0]):
        cosines = [layer[index].cosine for layer in report.layers]
        axes.plot(layers, cosines, marker="o", label=f"{report.word}@{pair.a} vs {report.word}@{pair.b}")
    axes.set(
        xlabel="layer (0 = embeddings)",
        ylabel="cosine similarity",
        xticks=layers,
        title=f"How alike the occurrences of {report.word!r} stay, layer by layer",
    )
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(pyplot, figure, path)


def plot_histogram(stats: FeatureStats, path: str | Path) -> Path:
    """Histogram of one token's feature values at one layer."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(8, 5))
    axes.hist(stats.values, bins=200)
    axes.set(
        xlabel="feature value",
        ylabel="count",
        title=f"token {stats.token!r} (position {stats.position}), layer {stats.layer}: {len(stats.values)} features",
    )
    return _save(pyplot, figure, path)


def _save(pyplot, figure, path: str | Path) -> Path:
    path = Path(path)
    try:
        figure.savefig(path, format="png", dpi=100, bbox_inches="tight")
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror}") from None
    finally:
        pyplot.close(figure)
    return path
