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
from sgdlab.sde.problems import max_sample_curvature
from sgdlab.sde.weak_error import weak_error_study

__all__ = ["run", "stability_status"]

STUDY_NAME = "sde"


def run(config: SDEConfig | dict[str, Any] | str | Path | None = None, progress: Callable[[int, int], None] | None = None) -> xr.Dataset:
    """The weak-error study of ``config`` (a dict of TOML keys, a TOML path, an :class:`SDEConfig`
    or ``None``: the built-in ``default`` example); ``progress(done, total)`` after each
    (process, eta). A pure function of the config: no file is read or written but the config.

    Raises :class:`~sgdlab.core.errors.ConfigError` for an invalid config and
    :class:`~sgdlab.core.errors.NonFiniteError` (naming the quantity, eta, process, time and seed)
    when SGD or a model diverges; its ``partial`` is the Dataset so far, ``status = "failed: ..."``.
    A run with some eta beyond SGD's stability limit (:func:`stability_status`) returns its
    Dataset with ``status = "flagged: ..."`` (the command keeps it and exits 1).
    """
    cfg = load_config(config)
    problem = cfg.problem.to_problem()
    starts = cfg.problem.starting_points(cfg.copies)
    status = stability_status(cfg.study.etas, max_sample_curvature(problem, starts))
    try:
        ds = weak_error_study(
            problem,
            cfg.study.models,
            cfg.study.etas,
            cfg.study.observables,
            cfg.study.horizon,
            x0=starts,
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
        if status != "complete":
            err.args = (f"{err}; {status.removeprefix('flagged: ')}",)
        if err.partial is not None:
            err.partial.attrs.update(provenance(cfg, study=STUDY_NAME, status=f"failed: {err}"))
        raise
    ds.attrs.update(provenance(cfg, study=STUDY_NAME, status=status))
    return ds


def stability_status(etas, curvature: float) -> str:
    """``"complete"``, or ``"flagged: ..."`` naming the etas with ``eta * curvature > 2``: there one
    SGD step on the stiffest sample expands deviations (``curvature``: the largest per-sample
    Hessian eigenvalue at the starting points, :func:`~sgdlab.sde.problems.max_sample_curvature`),
    SGD is not in the small-eta regime the models expand around, and its fitted orders mean nothing."""
    unstable = [eta for eta in etas if eta * curvature > 2]
    if not unstable:
        return "complete"
    return (f"flagged: SGD is beyond its stability limit at study.etas = {', '.join(f'{e:g}' for e in unstable)} "
            f"(eta * lambda_max > 2, lambda_max = {curvature:.4g} the largest per-sample curvature at the starts): "
            f"the weak errors there are not small-eta errors and the fitted orders mean nothing; use etas below {2 / curvature:.4g}")
