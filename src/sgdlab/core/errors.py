"""The errors sgdlab raises on purpose. The command line turns each into one clear line.

- :class:`ConfigError`: an invalid configuration, raised before any computation; the message
  names the key, the value and the allowed range.
- :class:`NonFiniteError`: a computed quantity became NaN or inf; it names the quantity, the time
  and the seed, and ``partial`` keeps what was computed before.
"""

from __future__ import annotations

from typing import Any


class SgdlabError(Exception):
    """Base of the errors that sgdlab reports to a user as one line (no traceback)."""


class ConfigError(SgdlabError, ValueError):
    """An invalid configuration; the message names the offending key and the allowed range."""


class NonFiniteError(SgdlabError, FloatingPointError):
    """A computed quantity became NaN or inf. ``partial`` holds the Dataset up to that time."""

    def __init__(self, message: str, partial: Any = None):
        super().__init__(message)
        self.partial = partial


class FlaggedResult(SgdlabError):
    """A result was computed and kept but is flagged (its ``status`` attr is not ``complete``,
    e.g. a DMFT that did not converge): the command exits with a non-zero code."""
