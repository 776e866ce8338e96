"""Memory estimates checked before a run allocates anything.

A wing estimates the bytes its largest arrays will take (:func:`check_memory` is given the
estimate and the keys that set it) and a run that would not fit in the memory available now is
refused with a :class:`~sgdlab.core.errors.ConfigError` naming the estimate, the free memory and
the keys to change. ``SGDLAB_MEMORY_FRACTION`` (default 0.8) is the part of the available memory
a run may plan to use.
"""

from __future__ import annotations

import os


def available_bytes() -> int:
    """Memory available to a new allocation now (``psutil.virtual_memory().available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def memory_problem(estimate: float, what: str, keys: str) -> str | None:
    """The refusal message if ``estimate`` bytes do not fit, else ``None``."""
    fraction = float(os.environ.get("SGDLAB_MEMORY_FRACTION", "0.8"))
    free = available_bytes()
    if estimate <= fraction * free:
        return None
    return (f"{what} needs about {gib(estimate)}, more than {fraction:g} of the {gib(free)} of memory available now; "
            f"lower {keys}")
