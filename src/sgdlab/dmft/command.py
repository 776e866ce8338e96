"""The studies of the Gaussian-mixture wing, as the CLI and the sweep engine see them.

- :data:`STUDY` (``sgdlab run``, ``sgdlab theory``, ``sgdlab sweep``): a run of
  :func:`sgdlab.dmft.experiment.run`, simulation beside DMFT.
- :data:`NOISE` (``sgdlab noise``): the effective noise of SGD, :func:`sgdlab.dmft.noise.run`
  (FDT temperature, replica distance, margins); a ``[sweep]`` of it is the phase diagram.
"""

from __future__ import annotations

import xarray as xr

from sgdlab.core.report import table
from sgdlab.core.study import Study
from sgdlab.dmft.config import Config
from sgdlab.dmft.experiment import group_key, run, run_many
from sgdlab.dmft.noise import NoiseStudyConfig

SUMMARY_VARIABLES = ("m", "q", "train_loss", "train_error", "test_loss", "test_error")


def summary_table(ds: xr.Dataset):
    """The order parameters at the last saved time, per method, with standard errors.

    Simulation: mean over seeds ± its standard error (std / sqrt(seeds)); DMFT: mean of the
    independent solves ± its Monte-Carlo standard error (``<name>_se``). The last column is the
    gap in units of the combined error, ``z = (sim - theory) / sqrt(se_sim^2 + se_theory^2)``.
    """
    import numpy as np

    rows = []
    methods = list(map(str, ds.method.values))
    for var in SUMMARY_VARIABLES:
        if var not in ds:
            continue
        est = {}
        for i, method in enumerate(methods):
            da = ds[var].isel(method=i, t=-1)
            if method == "sim" and "seed" in da.dims and da.sizes["seed"] > 1:
                est[method] = (float(da.mean()), float(da.std(ddof=1)) / np.sqrt(da.sizes["seed"]))
            else:
                se = ds[f"{var}_se"].isel(method=i, t=-1) if f"{var}_se" in ds else None
                est[method] = (float(da.mean()), float(se.mean()) if se is not None else float("nan"))
        for method, (mean, se) in est.items():
            z = "-"
            if method != "sim" and "sim" in est:
                combined = np.hypot(est["sim"][1], se)
                z = f"{(est['sim'][0] - mean) / combined:+.2f}" if np.isfinite(combined) and combined > 0 else "-"
            rows.append([var, method, f"{mean:.4f}", f"{se:.4f}" if np.isfinite(se) else "-", z])
    t_end = float(ds.t[-1])
    status = str(ds.attrs.get("status", "complete"))
    title = f"{ds.attrs.get('study', 'dmft')}: t = {t_end:g}" + ("" if status == "complete" else f"  [{status.upper()}]")
    return table(title, ["quantity", "method", "mean", "± s.e.", "z = (sim - theory) / combined s.e."], rows)


STUDY = Study(
    name="dmft",
    command="run",
    config=Config,
    run=lambda cfg, progress=None: run(cfg, progress),
    figures="sgdlab.dmft.plot:figures",
    table=summary_table,
    ref="sgdlab.dmft.command:STUDY",
    run_many=run_many,
    group_key=group_key,
)


def _run_noise(cfg, progress=None):
    from sgdlab.dmft import noise

    return noise.run(cfg, progress)


NOISE = Study(
    name="noise",
    command="noise",
    config=NoiseStudyConfig,
    run=_run_noise,
    figures="sgdlab.dmft.noise_plot:figures",
    table="sgdlab.dmft.noise_plot:table",
    ref="sgdlab.dmft.command:NOISE",
    sweep_variables=("D_inf", "T_eff", "kappa_max"),
)
