"""DMFT wired into experiments: one Dataset with sim and dmft, the normalisation mapping, CLI."""

import numpy as np
import pytest
from typer.testing import CliRunner

import sgdlab
from sgdlab.core import store
from sgdlab.cli import app

SMALL = {
    "problem": {"loss": "logistic", "ridge": 0.05},
    "algorithm": {"name": "persistent_sgd", "eta": 0.1, "batch_fraction": 0.4, "persistence_time": 0.5, "horizon": 2.0, "save_every": 2},
    "simulation": {"d": 200, "seeds": 3},
    "theory": {"methods": ["dmft"], "samples": 2000},
}


def test_run_puts_dmft_beside_the_simulation():
    ds = sgdlab.run(SMALL)
    assert list(ds.method.values) == ["sim", "dmft"]
    assert ds.m.dims == ("method", "seed", "t") and ds.C.dims == ("method", "t", "t_prime")
    dmft = ds.isel(method=1)
    # a theory has no seed: its curve is repeated along seed
    assert np.all(dmft.m.values == dmft.m.values[:1]) and np.all(np.isfinite(dmft.m.values))
    assert np.all(np.isnan(ds.isel(method=0).C.values))  # the simulation does not store C(t, t')
    np.testing.assert_allclose(dmft.q.isel(seed=0).values, np.diag(dmft.C.values))
    assert ds.attrs["dmft_converged"] in (0, 1) and "config" in ds.attrs


def test_theory_only_and_normalisation_mapping():
    """normalised (eta, lambda, tau) and unnormalised (eta/b, b lambda, tau/b) give the same DMFT."""
    b = 0.4
    norm = {**SMALL, "algorithm": {**SMALL["algorithm"], "normalisation": "normalised"}}
    unnorm = {
        **SMALL,
        "problem": {**SMALL["problem"], "ridge": 0.05 * b},
        "algorithm": {**SMALL["algorithm"], "eta": 0.1 / b, "persistence_time": 0.5 / b, "horizon": 2.0 / b},
    }
    a = sgdlab.run(norm, simulation=False)
    c = sgdlab.run(unnorm, simulation=False)
    assert "seed" not in a.dims and list(a.method.values) == ["dmft"]
    np.testing.assert_allclose(c.t.values * b, a.t.values, rtol=1e-12)
    for k in ("m", "q", "train_loss", "test_error"):
        np.testing.assert_allclose(a[k].values, c[k].values, rtol=1e-9, atol=1e-12)


def test_theory_config_validation():
    with pytest.raises(sgdlab.ConfigError, match=r"theory\.methods"):
        sgdlab.load_config({"theory": {"methods": ["replica"]}})
    with pytest.raises(sgdlab.ConfigError, match=r"theory\.damping"):
        sgdlab.load_config({"theory": {"damping": 1.0}})
    with pytest.raises(sgdlab.ConfigError, match=r"theory\.samples"):
        sgdlab.load_config({"theory": {"samples": 1}})
    with pytest.raises(sgdlab.ConfigError, match=r"theory\.samples=100 must be >= 2 \(n_steps \+ 1\) = 302"):
        sgdlab.load_config({"theory": {"methods": ["dmft"], "samples": 100}})
    for key, value in (("iterations", 0), ("tolerance", 0.0), ("seed", -1), ("response", "exact"), ("start", "warm")):
        with pytest.raises(sgdlab.ConfigError, match=rf"theory\.{key}"):
            sgdlab.load_config({"theory": {key: value}})
    with pytest.raises(sgdlab.ConfigError, match="lists a method twice"):
        sgdlab.load_config({"theory": {"methods": ["dmft", "dmft"]}})


def test_cli_theory_command(tmp_path):
    cfg = tmp_path / "th.toml"
    cfg.write_text(
        '[algorithm]\nname = "sgd"\nbatch_fraction = 0.5\nhorizon = 1.0\n[theory]\nsamples = 1000\n'
    )
    result = CliRunner().invoke(app, ["theory", str(cfg), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    ds = store.load(tmp_path / "th-theory.zarr")
    assert list(ds.method.values) == ["dmft"] and (tmp_path / "th-theory.png").exists()
