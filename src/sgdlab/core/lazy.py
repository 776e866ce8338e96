"""Lazy public faces: a wing's ``__init__`` names its exports without importing every module.

Usage in ``sgdlab/<wing>/__init__.py``::

    _WHERE = {"run": "experiment", "figures": "plot"}       # name -> submodule
    __all__, __getattr__, __dir__ = lazy_exports(__name__, _WHERE)

A name is imported from ``<package>.<submodule>`` at its first use and cached in the package; a
name mapped to itself (``{"noise": "noise"}``) exports the submodule ``<package>.noise``.

:func:`import_ref` imports the object named by ``"package.module:ATTRIBUTE"``, and
:class:`LazyRef` is a callable that does so at its first call (a study names its figures without
importing matplotlib, see :class:`sgdlab.core.study.Study`).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any, Callable


def lazy_exports(package: str, where: dict[str, str]) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` of ``package`` exporting ``where``'s names lazily."""
    names = sorted(where)

    def __getattr__(name: str) -> Any:
        if name in where:
            module = importlib.import_module(f"{package}.{where[name]}")
            value = module if where[name] == name else getattr(module, name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return names, __getattr__, __dir__


def import_ref(ref: str) -> Any:
    """The object named by ``ref = "package.module:ATTRIBUTE"``."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class LazyRef:
    """A callable named by ``"package.module:ATTRIBUTE"``, imported at its first call (picklable)."""

    ref: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return import_ref(self.ref)(*args, **kwargs)
