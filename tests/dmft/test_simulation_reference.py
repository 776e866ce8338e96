"""The JAX simulator against a plain NumPy loop on a tiny problem (same data, masks and noise).

The reference re-derives everything from the spec: the mask transitions from their formulas
(``p_on = eta / tau``, ...), the update ``w - eta [lambda w + sum s loss' x / sqrt(d) / B]`` and
the order parameters. It only shares the random streams (documented in ``sgdlab.dmft.simulation``).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdlab
from sgdlab.dmft import problem as gm
from sgdlab.dmft.simulation import STREAM_MASK, STREAM_NOISE, make_simulator

D, SEED = 40, 3


def dloss_numpy(loss, y, z, kappa=0.0):
    if loss == "square":
        return z - y
    if loss == "logistic":
        return -y / (1.0 + np.exp(y * z))
    if loss == "squared_hinge":
        return -y * np.maximum(0.0, kappa - y * z)
    raise ValueError(loss)


def reference_run(cfg: sgdlab.Config, data, key):
    """Order parameters (m, q, train_loss) at every step, by a NumPy loop in float64."""
    p, a = cfg.problem, cfg.algorithm
    x, y, v = (np.asarray(t, dtype=np.float64) for t in (data.train.x, data.train.y, data.train.v))
    n, d = x.shape
    w = p.m0 * v + p.sigma0 * np.asarray(jax.random.normal(jax.random.fold_in(key, 2), (d,), jnp.float32), dtype=np.float64)
    b, tau, eta = a.batch_fraction, a.persistence_time, a.eta
    if a.name == "gd" or b == 1:
        p_on, p_off = 1.0, 0.0
    elif a.name == "sgd":
        p_on, p_off = b, 1 - b
    elif a.name == "sgf":
        p_on, p_off = b * (1 - math.exp(-eta / (b * tau))), (1 - b) * (1 - math.exp(-eta / (b * tau)))
    else:  # persistent_sgd, langevin
        p_on, p_off = eta / tau, (1 - b) * eta / (b * tau)
    mask_key = jax.random.fold_in(key, STREAM_MASK)
    noise_key = jax.random.fold_in(key, STREAM_NOISE)
    s = np.ones(n, bool) if b == 1 else np.asarray(jax.random.uniform(jax.random.fold_in(mask_key, 0), (n,))) < b
    batch_norm = b if a.normalisation == "normalised" else 1.0
    out = []
    for k in range(a.n_steps + 1):
        h = x @ w / math.sqrt(d)
        if p.loss == "square":
            loss = 0.5 * (y - h) ** 2
        elif p.loss == "logistic":
            loss = np.log1p(np.exp(-y * h))
        else:
            loss = 0.5 * np.maximum(0.0, p.kappa - y * h) ** 2
        out.append((w @ v / d, w @ w / d, loss.mean()))
        if k == a.n_steps:
            break
        g = x.T @ (s * dloss_numpy(p.loss, y, h, p.kappa)) / math.sqrt(d)
        w = w - eta * (p.ridge * w + g / batch_norm)
        if a.name == "langevin":
            xi = np.asarray(jax.random.normal(jax.random.fold_in(noise_key, k), (d,), jnp.float32), dtype=np.float64)
            w = w + math.sqrt(2 * a.temperature * eta) * xi
        if b < 1:
            u = np.asarray(jax.random.uniform(jax.random.fold_in(mask_key, k + 1), (n,)))
            s = np.where(s, u >= p_off, u < p_on)
    return np.array(out)


ALGORITHMS = [
    {"name": "gd"},
    {"name": "sgd", "batch_fraction": 0.3},
    {"name": "persistent_sgd", "batch_fraction": 0.3, "persistence_time": 0.5},
    {"name": "sgf", "batch_fraction": 0.4, "persistence_time": 0.3},
    {"name": "langevin", "temperature": 0.3},
    {"name": "langevin", "temperature": 0.3, "batch_fraction": 0.5, "persistence_time": 0.4},
]


def tiny_config(algorithm, normalisation="unnormalised", loss="logistic"):
    return sgdlab.load_config(
        {
            "problem": {"alpha": 1.5, "loss": loss, "ridge": 0.05, "m0": 0.2},
            "algorithm": {**algorithm, "eta": 0.1, "horizon": 2.0, "normalisation": normalisation},
            "simulation": {"d": D, "seeds": [SEED], "dtype": "float64"},
        }
    )


@pytest.mark.parametrize("normalisation", ["unnormalised", "normalised"])
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: "-".join(str(v) for v in a.values()))
def test_simulator_matches_numpy_loop(algorithm, normalisation):
    cfg = tiny_config(algorithm, normalisation)
    a = cfg.algorithm
    sim = make_simulator(
        cfg.problem.to_problem(), a.name, D, a.eta, a.batch_fraction, a.persistence_time, a.temperature,
        a.normalisation, 1, jnp.float64,
    )
    key = jax.random.key(SEED)
    data, _ = sim.init(key)
    ref = reference_run(cfg, data, key)
    ds = sgdlab.run(cfg)
    got = np.stack([ds[k].values[0, 0] for k in ("m", "q", "train_loss")], axis=1)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss", ["square", "squared_hinge"])
def test_other_losses_match_numpy_loop(loss):
    cfg = tiny_config({"name": "persistent_sgd", "batch_fraction": 0.3, "persistence_time": 0.5}, loss=loss)
    a = cfg.algorithm
    sim = make_simulator(cfg.problem.to_problem(), a.name, D, a.eta, a.batch_fraction, a.persistence_time, dtype=jnp.float64)
    key = jax.random.key(SEED)
    ref = reference_run(cfg, sim.init(key)[0], key)
    ds = sgdlab.run(cfg)
    got = np.stack([ds[k].values[0, 0] for k in ("m", "q", "train_loss")], axis=1)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "algorithm",
    [
        {"name": "persistent_sgd", "batch_fraction": 0.4, "persistence_time": 0.5},
        {"name": "sgd", "batch_fraction": 0.4},
        {"name": "langevin", "temperature": 0.2, "batch_fraction": 0.5, "persistence_time": 0.6},
    ],
    ids=lambda a: a["name"],
)
def test_normalisation_mapping_gives_identical_trajectories(algorithm):
    """normalised (eta, lambda, tau, T) == unnormalised (eta/b, b lambda, tau/b, b T), step by step."""
    b, eta, ridge, horizon = algorithm["batch_fraction"], 0.1, 0.05, 3.0
    base = {"problem": {"ridge": ridge, "loss": "logistic"}, "simulation": {"d": D, "seeds": [1, 2], "dtype": "float64"}}
    norm = sgdlab.run({**base, "algorithm": {**algorithm, "eta": eta, "horizon": horizon, "normalisation": "normalised"}})
    mapped = dict(algorithm, eta=eta / b, horizon=horizon / b)
    if "persistence_time" in algorithm:
        mapped["persistence_time"] = algorithm["persistence_time"] / b
    if "temperature" in algorithm:
        mapped["temperature"] = algorithm["temperature"] * b
    base["problem"]["ridge"] = ridge * b
    unnorm = sgdlab.run({**base, "algorithm": mapped})
    assert norm.sizes["t"] == unnorm.sizes["t"]
    np.testing.assert_allclose(unnorm.t.values * b, norm.t.values, rtol=1e-12)
    for k in ("m", "q", "train_loss", "batch_occupancy"):
        np.testing.assert_allclose(unnorm[k].values, norm[k].values, rtol=1e-9, atol=1e-12)


def test_data_statistics():
    """x = c v / sqrt(d) + sqrt(Delta) z: cluster weights and unit-variance noise, within sampling error."""
    problem = gm.GaussianMixture(alpha=4.0, delta=0.7, rho=0.3)
    d = 500
    v = gm.sample_centroid(jax.random.key(0), d, jnp.float64)
    data = gm.sample_dataset(jax.random.key(1), problem, v, problem.n_samples(d))
    c, x = np.asarray(data.c), np.asarray(data.x)
    n = c.size
    assert abs((c == 1).mean() - 0.3) < 5 * math.sqrt(0.3 * 0.7 / n)
    z = (x - c[:, None] * np.asarray(v)[None] / math.sqrt(d)) / math.sqrt(0.7)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / z.size)
    np.testing.assert_array_equal(np.asarray(data.y), c)
