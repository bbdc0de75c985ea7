"""Quilt for Python: model summaries, the cut search, and result files.

    import quilt
    quilt.summary("resnet50", rate=64)            # the C++ extension quilt._core
    quilt.read_results("results/quickstart.h5")   # a result file as dicts and lists
    quilt.results.runs("results/*.h5")            # ... as pandas DataFrames (quilt.results)

Everything of the extension `quilt._core` is re-exported here. The pure-Python modules:
`quilt.results` (DataFrames), `quilt.verdicts` (the statistics behind SHOWS / DOES NOT SHOW /
INCONCLUSIVE), `quilt.paper` (the QuiltNet paper's numbers), `quilt.plotting` (figure styling).
They import pandas/scipy/matplotlib only when imported themselves.
"""
from ._core import *  # noqa: F401,F403

__all__ = [name for name in dir() if not name.startswith("_")] + [
    "results", "verdicts", "paper", "plotting"]


def __getattr__(name):
    # quilt.results & co. on first use, so that `import quilt` stays as light as the extension.
    if name in ("results", "verdicts", "paper", "plotting"):
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'quilt' has no attribute '{name}'")
