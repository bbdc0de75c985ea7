"""Figure styling shared by the analysis scripts: one look, integer epoch axes, legends beside the
axes (never over bars or points), and a caption on every figure saying what its numbers are (time
model, stand-in data, which runs): the same words the script's text output prints."""
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

COLORS = ["C0", "C1", "C2", "C3", "C4", "C5"]


def figure(ncols=1, width_per=5.5, height=4.0):
    """A new figure with `ncols` axes side by side (a list, even for one)."""
    plt.rcParams.update({"axes.grid": True, "grid.alpha": 0.3, "font.size": 9,
                         "legend.fontsize": 8, "axes.titlesize": 10})
    fig, axes = plt.subplots(1, ncols, figsize=(width_per * ncols, height), squeeze=False)
    return fig, list(axes[0])


def epoch_axis(ax):
    """Epochs are whole numbers: no 1.5 or 2.5 ticks."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def legend_outside(ax, handles=None, labels=None):
    """The legend of `ax` (or the given handles) to the right of the axes, where it cannot cover
    bars or points; save() makes room for it."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                  borderaxespad=0.0)


def save(fig, path, caption_lines=()):
    """Writes `path` (PNG) with `caption_lines` (time model, stand-in data, ...) as a caption
    under the axes, then closes the figure."""
    lines = [textwrap.fill(line, 160) for line in caption_lines if line]
    text = "\n".join(lines)
    n = text.count("\n") + 1 if text else 0
    height = fig.get_size_inches()[1]
    # Room at the bottom for the caption (about 0.14 inch per line), the rest laid out tightly
    # (legends beside the axes included).
    bottom = min(0.45, (0.14 * n + 0.1) / height) if n else 0
    fig.tight_layout(rect=(0, bottom, 1, 1))
    if text:
        fig.text(0.01, 0.01, text, fontsize=7, va="bottom", ha="left", color="0.25")
    fig.savefig(path, dpi=120)
    plt.close(fig)
