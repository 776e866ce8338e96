"""``run``: the weak-error study of a config (``sgdlab sde``), as one xarray Dataset.

The Dataset is that of :func:`sgdlab.sde.weak_error.weak_error_study` (dims
``(model, eta, observable)``: SGD's values, each model's values and weak errors with standard
errors, the fitted orders ``slope`` with a 95% interval, the theory's ``expected_order``, the
``solver`` used) with the standard provenance attrs (``config``, ``config_hash``,
``study = "sde"``, ``status``, versions) beside its own (``horizon``, ``scheme``, ``x0``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import xarray as xr

from sgdlab.core.errors import NonFiniteError
from sgdlab.core.provenance import provenance
from sgdlab.sde.config import SDEConfig, load_config
from sgdlab.sde.weak_error import weak_error_study

__all__ = ["run"]

STUDY_NAME = "sde"


def run(config: SDEConfig | dict[str, Any] | str | Path | None = None, progress: Callable[[int, int], None] | None = None) -> xr.Dataset:
    """The weak-error study of ``config`` (a dict of TOML keys, a TOML path, an :class:`SDEConfig`
    or ``None``: the built-in ``default`` example); ``progress(done, total)`` after each
    (process, eta). A pure function of the config: no file is read or written but the config.

    Raises :class:`~sgdlab.core.errors.ConfigError` for an invalid config and
    :class:`~sgdlab.core.errors.NonFiniteError` (naming the quantity, eta and process) when SGD or
    a model diverges; its ``partial`` is the Dataset so far, ``status = "failed: ..."``.
    """
    cfg = load_config(config)
    try:
        ds = weak_error_study(
            cfg.problem.to_problem(),
            cfg.study.models,
            cfg.study.etas,
            cfg.study.observables,
            cfg.study.horizon,
            x0=cfg.problem.starting_points(cfg.copies),
            method=cfg.solver.method,
            n_paths=cfg.solver.paths,
            scheme=cfg.solver.scheme,
            substeps=cfg.solver.substeps,
            seed=cfg.solver.seed,
            chunk=cfg.solver.chunk,
            svag_l=cfg.study.svag_l,
            antithetic=cfg.solver.antithetic,
            progress=progress,
        )
    except NonFiniteError as err:
        if err.partial is not None:
            err.partial.attrs.update(provenance(cfg, study=STUDY_NAME, status=f"failed: {err}"))
        raise
    ds.attrs.update(provenance(cfg, study=STUDY_NAME))
    return ds
