"""matplotlib for the `--plot` options: a headless pyplot and one way to write a figure.

Each failure is one UserError line, like every other problem with a flag's value.
"""

from __future__ import annotations

from typing import Any

from distnet.common.errors import UserError


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib (pip install matplotlib)") from None
    return plt


def save_figure(fig: Any, path: str, dpi: int = 110) -> None:
    """Write `fig` to `path` and close it, also when the write fails."""
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path, dpi=dpi)
    except OSError as exc:
        raise UserError(f"cannot write --plot {path}: {exc.strerror}") from None
    finally:
        plt.close(fig)
