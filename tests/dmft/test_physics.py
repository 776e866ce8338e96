"""Physics checks of the simulator: GD reaches the ridge minimiser, exact vs sampled test error,
float32 vs float64, determinism and the non-finite stop."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdlab
from sgdlab.dmft import problem as gm
from sgdlab.dmft.simulation import make_simulator


def test_gd_square_loss_converges_to_ridge_minimiser():
    """w* = (X^T X / d + lambda I)^{-1} X^T y / sqrt(d), on the same data (linear algebra)."""
    d, ridge, seeds = 200, 0.1, [0, 1, 2]
    cfg = sgdlab.load_config(
        {
            "problem": {"alpha": 2.0, "delta": 0.5, "loss": "square", "ridge": ridge},
            "algorithm": {"name": "gd", "eta": 0.2, "horizon": 150.0, "save_every": 10},
            "simulation": {"d": d, "seeds": seeds, "dtype": "float64"},
        }
    )
    ds = sgdlab.run(cfg)
    sim = make_simulator(cfg.problem.to_problem(), "gd", d, 0.2, dtype=jnp.float64)
    for i, seed in enumerate(seeds):
        data, _ = sim.init(jax.random.key(seed))
        x, y, v = (np.asarray(a) for a in (data.train.x, data.train.y, data.train.v))
        w = np.linalg.solve(x.T @ x / d + ridge * np.eye(d), x.T @ y / math.sqrt(d))
        # GD contracts by at least (1 - eta lambda) per step: after 750 steps the error is < 1e-6 relative
        assert ds.m.values[0, i, -1] == pytest.approx(w @ v / d, rel=1e-8)
        assert ds.q.values[0, i, -1] == pytest.approx(w @ w / d, rel=1e-8)


@pytest.mark.parametrize("clusters", [2, 3])
def test_exact_test_error_matches_sampled_test_set(clusters):
    n_test = 40_000
    problem = {"clusters": clusters, "alpha": 2.0, "delta": 0.3, "loss": "square", "ridge": 0.1}
    if clusters == 3:
        problem.update(m0=0.8, sigma0=0.3, rho=0.6)
    ds = sgdlab.run(
        {
            "problem": problem,
            "algorithm": {"name": "sgd", "batch_fraction": 0.5, "eta": 0.05, "horizon": 3.0, "save_every": 6},
            "simulation": {"d": 300, "seeds": 2, "dtype": "float64", "test_samples": n_test},
        }
    )
    exact, sampled = ds.test_error.values, ds.test_error_sampled.values
    se = np.sqrt(exact * (1 - exact) / n_test)
    assert np.all(np.abs(sampled - exact) < 5 * se + 1e-12), np.max(np.abs(sampled - exact) / se)
    # test loss: sampling error from the same test set (loss variance bounded by its second moment)
    exact_l, sampled_l = ds.test_loss.values, ds.test_loss_sampled.values
    assert np.all(np.abs(sampled_l - exact_l) < 5 * np.sqrt(3 * exact_l**2 / n_test) + 0.02 * exact_l)


def test_test_loss_quadrature_against_closed_form_square_loss():
    """Square loss, two clusters: E (y - h)^2 / 2 = ((1 - m)^2 + Delta q) / 2 exactly."""
    p = gm.GaussianMixture(delta=0.4, loss="square")
    m, q = jnp.array([0.0, 0.3, 1.2]), jnp.array([0.5, 1.0, 2.0])
    np.testing.assert_allclose(gm.test_loss(p, m, q), 0.5 * ((1 - m) ** 2 + 0.4 * q), rtol=1e-12)


def test_float32_agrees_with_float64():
    """The default dtype float32 gives the float64 order parameters to well below seed spread."""
    base = {"simulation": {"d": 1000, "seeds": 3}, "algorithm": {"horizon": 10.0}}
    r32 = sgdlab.run({**base, "simulation": {**base["simulation"], "dtype": "float32"}})
    r64 = sgdlab.run({**base, "simulation": {**base["simulation"], "dtype": "float64"}})
    for k in ("m", "q", "train_loss", "test_error"):
        diff = np.max(np.abs(r32[k].values - r64[k].values))
        spread = float(r64[k].isel(t=-1).std())
        assert diff < 1e-4 and diff < 0.05 * spread, (k, diff, spread)


def test_a_seed_gives_the_same_bits_in_any_batching():
    """On a CPU a seed's run does not depend on what runs beside it: alone, in a list, in groups
    of any seed_batch (padded or not), bit for bit (the vmapped layout does not promise this:
    docs/dmft.md measures it differing with the width)."""
    base = {"algorithm": {"horizon": 2.0}}
    runs = {
        "list": {"seeds": [5, 2, 7, 3, 11]},
        "alone": {"seeds": [7]},
        "pair": {"seeds": [7, 5]},
        "batch 1": {"seeds": [5, 2, 7, 3, 11], "seed_batch": 1},
        "batch 2": {"seeds": [5, 2, 7, 3, 11], "seed_batch": 2},  # [5, 2], [7, 3], [11, 11]
        "batch 3": {"seeds": [5, 2, 7, 3, 11], "seed_batch": 3},  # [5, 2, 7], [3, 11, 3]
    }
    for dtype in ("float64", "float32"):
        out = {name: sgdlab.run({**base, "simulation": {"d": 300, "dtype": dtype, **sim}}) for name, sim in runs.items()}
        again = sgdlab.run({**base, "simulation": {"d": 300, "dtype": dtype, **runs["list"]}})
        for k in ("m", "q", "train_loss", "test_error"):
            ref = out["list"][k]
            np.testing.assert_array_equal(again[k].values, ref.values)
            for name, ds in out.items():
                np.testing.assert_array_equal(ds[k].values, ref.sel(seed=ds.seed.values).values, err_msg=f"{dtype} {name} {k}")


def test_vmapped_entries_agree_with_entries_one_by_one_to_rounding():
    """The GPU layout (entries vmapped) against the CPU one (entries one after the other): the
    same numbers to rounding (float64, relative 1e-12 after 4 saves); entries one by one give the
    same bits at any width."""
    from sgdlab.dmft.config import Config
    from sgdlab.dmft.experiment import simulation_inputs
    from sgdlab.dmft.simulation import batched, seed_keys, tile_params

    spec, params = simulation_inputs(Config.model_validate({"simulation": {"d": 1000, "dtype": "float64"}}))
    results = {}
    for entries in ("map", "vmap"):
        init, _, advance = batched(spec, entries)
        for width in (2, 5):
            p, keys = tile_params(params, width), seed_keys(range(width))
            data, state = init(p, keys)
            results[entries, width] = np.asarray(advance(p, data, keys, state, 4)[0].w[:2])
    np.testing.assert_array_equal(results["map", 2], results["map", 5])
    for key, w in results.items():
        np.testing.assert_allclose(w, results["map", 2], rtol=1e-12, atol=1e-14, err_msg=str(key))
    with pytest.raises(ValueError, match="entries = 'pmap'; allowed"):
        batched(spec, "pmap")


def test_divergence_stops_with_quantity_and_time():
    with pytest.raises(sgdlab.NonFiniteError, match=r"(m|q|train_loss|test_loss|train_error|test_error) became .* at t=") as info:
        sgdlab.run({"algorithm": {"name": "gd", "eta": 3.0, "horizon": 600.0}, "simulation": {"d": 100, "seeds": 1}})
    partial = info.value.partial
    assert partial is not None and np.all(np.isfinite(partial.q.values))
    assert partial.attrs["status"].startswith("failed")


def test_default_seed_batch_holds_16_mib_of_data_and_compiles_one_shape():
    """The automatic width: as many seeds as hold SEED_BATCH_BYTES of training data (n d entries
    each), at least one; an explicit seed_batch wins. Uneven groups are balanced and padded, so
    the simulator compiles one program whatever the number of seeds."""
    from sgdlab.dmft.config import SEED_BATCH_BYTES, Config
    from sgdlab.dmft.experiment import simulation_inputs
    from sgdlab.dmft.simulation import batched

    def width(**sim):
        return Config.model_validate({"simulation": sim}).seed_batch_width()

    assert SEED_BATCH_BYTES == 16 * 2**20
    assert width(d=2000) == 1  # 4000 x 2000 float32 = 32 MB a seed
    assert width(d=100) == SEED_BATCH_BYTES // (200 * 100 * 4) == 209
    assert width(d=500, dtype="float64") == SEED_BATCH_BYTES // (1000 * 500 * 8) == 4
    assert width(d=100, seed_batch=3) == 3
    cfg = {"simulation": {"d": 40, "seeds": 5, "seed_batch": 3}, "algorithm": {"horizon": 1.0}}
    sgdlab.run(cfg)  # groups [0, 1, 2], [3, 4, 3] (not [0, 1, 2], [3, 4]: two shapes)
    init, _, advance = batched(simulation_inputs(Config.model_validate(cfg))[0])
    assert init._cache_size() == 1 and advance._cache_size() == 1
