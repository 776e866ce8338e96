"""A study: what a wing hands to the core so that the one CLI, sweep engine and ``plot`` serve it.

The shape follows dynamiqs (one solve verb per equation family over shared options and result
types): each wing defines its config, its ``run(config) -> xarray.Dataset``, its figures and its
summary table, and wraps them in a :class:`Study`. The core never imports a wing: a sweep worker
finds a study again from its import string :attr:`Study.ref`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Hashable

from sgdlab.core.config import ExperimentConfig, validate_config
from sgdlab.core.lazy import LazyRef, import_ref

if TYPE_CHECKING:  # annotations only: importing a study does not import xarray
    import xarray as xr

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Study:
    """One kind of computation of a wing.

    - ``name``: written as the ``study`` attr of every result (``dmft``, ``noise``, ``sde``, ...);
    - ``command``: the CLI verb (``run``, ``noise``, ``sde``, ``manifold``, ``timescales``);
    - ``config``: the validated config class (an :class:`ExperimentConfig`);
    - ``run``: ``run(config, progress) -> Dataset`` on a validated config;
    - ``figures``: ``figures(ds) -> {suffix: Figure}`` (suffix ``""`` is the main figure,
      written to ``NAME.png``; others to ``NAME_suffix.png``), from the Dataset alone;
    - ``table``: ``table(ds) -> rich renderable``, the summary printed after a run;
      ``figures`` and ``table`` may be given as ``"module:ATTRIBUTE"``, imported at their first
      call (so that a run without figures never imports matplotlib);
    - ``ref``: ``"module:ATTRIBUTE"`` of this object, so that a worker process can import it;
    - ``run_many``: optional ``run_many(configs) -> [Dataset | Exception]`` for sweep points of
      one structure computed together (default: ``run`` on each);
    - ``group_key``: optional ``group_key(config) -> hashable``: points with equal keys may share
      one ``run_many`` call;
    - ``sweep_variables``: the variables drawn after a sweep (one figure each,
      ``NAME_<variable>.png``); empty: one figure ``NAME.png`` of the default variable.
    """

    name: str
    command: str
    config: type[ExperimentConfig]
    run: Callable[[Any, ProgressFn | None], xr.Dataset]
    figures: Callable[[xr.Dataset], dict[str, Any]] | str
    table: Callable[[xr.Dataset], Any] | str
    ref: str
    run_many: Callable[[list[Any]], list[Any]] | None = None
    group_key: Callable[[Any], Hashable] | None = None
    sweep_variables: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("figures", "table"):
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, LazyRef(getattr(self, name)))

    def load(self, source) -> ExperimentConfig:
        """The validated config of ``source`` (a config, a dict of TOML keys or a TOML path)."""
        return validate_config(self.config, source)

    def compute_many(self, configs: list[Any]) -> list[Any]:
        """Datasets (or the exception of each failed config) of several configs."""
        if self.run_many is not None:
            return self.run_many(configs)
        out = []
        for c in configs:
            try:
                out.append(self.run(c, None))
            except Exception as err:  # a failed point is recorded, the others go on
                out.append(err)
        return out


def study_from_ref(ref: str) -> Study:
    """Import the :class:`Study` named by ``"module:ATTRIBUTE"``."""
    return import_ref(ref)
