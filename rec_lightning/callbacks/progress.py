"""``LearningRateProgressBar``: Lightning's TQDM progress bar with the learning rate in scientific notation.

tqdm prints floats with three significant digits in plain notation (``lr=0.0003``, and a warmup value
such as 1.5e-05 as ``1.5e-5`` only below 1e-4), so a schedule is hard to read at a glance. Here every
learning-rate entry (``lr``, ``*/lr``, ``lr-*``) prints as ``3.00e-04``. ``fit`` uses it unless the
config disables the progress bar or names its own.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


def is_learning_rate(name: str) -> bool:
    return name == "lr" or name.endswith("/lr") or name.startswith("lr-")


class LearningRateProgressBar(TQDMProgressBar):
    """:class:`~lightning.pytorch.callbacks.TQDMProgressBar` showing learning rates as ``3.00e-04``."""

    def get_metrics(self, trainer, pl_module) -> dict[str, int | str | float | dict[str, float]]:
        items = super().get_metrics(trainer, pl_module)
        return {name: f"{float(value):.2e}" if is_learning_rate(name) and isinstance(value, (int, float)) else value
                for name, value in items.items()}
