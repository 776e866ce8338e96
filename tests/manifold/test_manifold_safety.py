"""Safety of the manifold wing: the LAPACK-free eigensolver that removed the SGLD deadlock, the
memory estimate refused before any allocation, and named errors for a fast phase that fails.

The deadlock: XLA's batched CPU ``eigh`` splits its batch over the XLA thread pool and waits for
the pieces; inside the ``vmap``-ed limit SDE with ``10^4`` paths every pool thread waited so
(seen in gdb: both threads in ``jax::ParallelBatchMap`` under ``lapack_dsyevd_ffi``), forever.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdlab
from sgdlab.core.errors import ConfigError, NonFiniteError
from sgdlab.manifold import experiment as me
from sgdlab.manifold import limit as mf
from sgdlab.manifold import models as mm
from sgdlab.manifold.config import load_config
from sgdlab.manifold.spectral import _tournament, jacobi_eigh

SMALL = {"simulation": {"etas": [0.05, 0.025], "runs": 4, "tau_max": 0.2, "tau_save": 0.1}}


def symmetric_cases(rng):
    for p in (1, 2, 3, 4, 5, 8, 15, 24):
        q, _ = np.linalg.qr(rng.normal(size=(p, p)))
        j = rng.normal(size=(max(1, p // 3), p))
        yield p, "random", (lambda a: a + a.T)(rng.normal(size=(p, p)))
        yield p, "low rank PSD (a Gauss-Newton Hessian)", j.T @ j
        yield p, "repeated eigenvalues", (q * np.repeat([1.0, 2.0], (p + 1) // 2)[:p]) @ q.T
        yield p, "graded 1e-12 .. 1e3", (q * np.logspace(-12, 3, p)) @ q.T
        yield p, "zero", np.zeros((p, p))


def test_the_tournament_pairs_every_index_once_per_round_and_every_pair_once_per_sweep():
    for m in (2, 4, 6, 16):
        rounds = _tournament(m)
        assert all(sorted(r) == list(range(m)) and all(r[r[i]] == i and r[i] != i for i in range(m)) for r in rounds)
        pairs = {tuple(sorted((i, int(r[i])))) for r in rounds for i in range(m)}
        assert len(pairs) == m * (m - 1) // 2


def test_jacobi_eigh_agrees_with_lapack_to_rounding():
    eig = jax.jit(jacobi_eigh)
    for p, kind, a in symmetric_cases(np.random.default_rng(0)):
        lam, v = (np.asarray(x) for x in eig(jnp.asarray(a)))
        scale = max(np.linalg.norm(a), np.finfo(float).tiny)
        tol = 8 * p * np.finfo(float).eps  # the backward error of either method, O(p eps |A|)
        assert np.all(np.diff(lam) >= 0), (p, kind)
        assert np.abs(lam - np.linalg.eigvalsh(a)).max() <= tol * scale, (p, kind)
        assert np.abs(v.T @ v - np.eye(p)).max() <= tol, (p, kind)
        assert np.abs((v * lam) @ v.T - a).max() <= tol * scale, (p, kind)


def test_jacobi_eigh_stops_on_nan_and_runs_under_a_large_vmap():
    lam, _ = jax.jit(jacobi_eigh)(jnp.full((3, 3), jnp.nan))
    assert np.all(np.isnan(lam))
    a = np.random.default_rng(1).normal(size=(10_000, 2, 2))
    a = a + np.swapaxes(a, 1, 2)
    lam, _ = jax.jit(jax.vmap(jacobi_eigh))(jnp.asarray(a))
    assert np.abs(np.asarray(lam) - np.linalg.eigvalsh(a)).max() < 1e-14 * np.abs(a).max()


def lapack_tangent_space(loss, w, rank):
    """The former tangent_space (LAPACK eigh on the host), the reference of the rounding check."""
    lam, vec = np.linalg.eigh(np.asarray(mf.hessian(loss, jnp.asarray(w))))
    v, lr = vec[:, -rank:], lam[-rank:]
    return np.eye(len(w)) - v @ v.T, (v / lr) @ v.T, lr


def on_gamma(model):
    """A point of Gamma in closed form: a1 b1 + a2 b2 = 1 (two units); u = 1, v = beta* (diagonal)."""
    if model.name == "two_unit":
        return np.array([1.0, 0.65, 1.0, 0.35])
    d = model.n_params // 2
    beta = np.zeros(d)
    beta[:2] = 1.0  # the 2-sparse target: X beta* = y
    return np.concatenate([np.ones(d), beta])


@pytest.mark.parametrize("model", [mm.two_unit_network(), mm.diagonal_network(d=6, n=3)], ids=lambda m: m.name)
def test_tangent_space_is_the_lapack_one_to_rounding(model):
    """On Gamma and 1e-3 off it (where the retraction and the RK stages evaluate it)."""
    phi0 = on_gamma(model)
    assert float(model.loss(jnp.asarray(phi0))) < 1e-28
    rank = mf.hessian_rank(model.loss, phi0)
    assert rank == model.n_samples
    rng = np.random.default_rng(2)
    points = [phi0] + [phi0 + 1e-3 * rng.normal(size=phi0.shape) for _ in range(3)]
    ts = jax.jit(lambda v: mf.tangent_space(model.loss, v, rank))
    for w in points:
        got = ts(jnp.asarray(w))
        tangent, pinv, lam = lapack_tangent_space(model.loss, w, rank)
        gap = lam.min()  # the projector's conditioning: eps |H| / gap
        tol = 100 * np.finfo(float).eps * np.abs(lam).max() / gap
        assert np.abs(np.asarray(got.tangent) - tangent).max() < tol
        assert np.abs(np.asarray(got.pinv) - pinv).max() < tol * np.abs(pinv).max()
        assert np.abs(np.asarray(got.normal_eigenvalues) - lam).max() < 100 * np.finfo(float).eps * np.abs(lam).max()


def test_the_limit_sde_calls_no_lapack():
    """The lowered SGLD limit integrator (the one that deadlocked) has no LAPACK custom call; the
    same lowering of a vmapped ``jnp.linalg.eigh`` has one (so the check can fail)."""
    cfg = load_config({"noise": {"name": "sgld", "sigma": 1.0}, **SMALL})
    model = me.build_model(cfg.model)
    loss_hat, zeta_dim, corr = me.limit_inputs(cfg, model)
    drift, diffusion = mf.degenerate_coefficients(model.loss, loss_hat, zeta_dim, 1, corr)
    integrator = mf._sde_integrator(model.loss, drift, diffusion, 1, 2)
    text = integrator.lower(model.w0, jnp.float64(0.1), jnp.int32(4), jax.random.split(jax.random.key(0), 8)).as_text()
    assert "lapack" not in text.lower() and "eigh" not in text.lower()
    control = jax.jit(jax.vmap(jnp.linalg.eigh)).lower(jnp.zeros((8, 2, 2))).as_text()
    assert "lapack" in control.lower()


HUNG = """
import json, time
import numpy as np
from sgdlab.manifold import experiment as me
cfg = me.load_config({"noise": {"name": "sgld", "sigma": 1.0}, "limit": {"substeps": 1000},
                      "simulation": {"runs": 10000, "tau_max": 0.05, "tau_save": 0.05}})
start = time.perf_counter()
sol = me.solve_manifold_limit(cfg, me.build_model(cfg.model))
w = sol.w
c = w[..., 0] ** 2 - w[..., 1] ** 2
print(json.dumps({"seconds": time.perf_counter() - start, "shape": list(w.shape), "finite": bool(np.isfinite(w).all()),
                  "c0": float(c[0, 0]), "c_mean": float(c[:, -1].mean()), "c_se": float(c[:, -1].std(ddof=1) / np.sqrt(len(c))),
                  "off_gamma": float(np.abs(w[..., 0] * w[..., 1] - 1).max())}))
"""


@pytest.mark.slow
def test_the_sgld_limit_at_the_size_that_hung_finishes():
    """10^4 paths x 1000 substeps (one save) in a subprocess with a timeout (a deadlock there would
    otherwise hang the suite): it finishes (1 to 3 min on 2 shared CPU cores), stays on Gamma, and C is
    a martingale (E C(tau) = C0 within 4 standard errors)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(sgdlab.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", HUNG], capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(out)
    assert out["shape"] == [10_000, 2, 2] and out["finite"]
    assert out["off_gamma"] < 1e-10
    assert abs(out["c_mean"] - out["c0"]) < 4 * out["c_se"]


# ---------------------------------------------------------------------------------------------
# memory: refused before allocating, with the keys to change
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tree, keys",
    [
        ({"simulation": {"runs": 100_000, "tau_max": 1000.0, "tau_save": 0.01}}, "simulation.runs"),  # 1.8 TB of results
        ({"model": {"name": "tanh", "width": 256, "input_dim": 256}, "noise": {"name": "sgld", "sigma": 1.0},
          "simulation": {"runs": 1000}}, "model.width, model.input_dim"),  # 1000 limit paths of 65792^2 Hessians
    ],
)
def test_a_config_that_needs_terabytes_is_refused_naming_the_keys(tree, keys, monkeypatch):
    monkeypatch.setattr(me.mf, "jitted_gradient_flow_limit", None)  # nothing may be computed
    with pytest.raises(ConfigError, match=r"needs about [0-9.e+]+ GiB, more than 0.8 of the [0-9.e+]+ GiB of memory available now") as err:
        me.run(tree)
    assert keys in str(err.value)


def test_the_estimate_counts_one_limit_path_per_run_only_for_a_stochastic_limit():
    cfg = load_config({"noise": {"name": "sgld", "sigma": 1.0}, "simulation": {"runs": 1000}})
    one, many = cfg.memory_estimate(False)["limit"][0], cfg.memory_estimate(True)["limit"][0]
    assert many > 500 * one
    assert "simulation.runs (one limit path per run)" in cfg.memory_estimate(True)["limit"][2]


@pytest.mark.slow
def test_the_estimate_bounds_what_xla_allocates():
    """Against XLA's compiled memory analysis of the runner (one eta) and of the limit SDE: the
    estimate is above it, by less than a factor 5."""
    cfg = load_config({"model": {"name": "diagonal", "d": 30, "n": 10}, "noise": {"name": "sgld", "sigma": 1.0},
                       "simulation": {"runs": 256, "tau_max": 0.05, "tau_save": 0.0025}})
    model = me.build_model(cfg.model)
    loss_hat, zeta_dim, corr = me.limit_inputs(cfg, model)
    phi0, rank = me.fast_phase(cfg, model)
    drift, diffusion = mf.degenerate_coefficients(model.loss, loss_hat, zeta_dim, rank, corr)
    keys = jax.random.split(jax.random.key(0), cfg.simulation.runs)
    sde = mf._sde_integrator(model.loss, drift, diffusion, rank, cfg.simulation.n_saves)
    m = sde.lower(phi0, jnp.float64(0.0025), jnp.int32(4), keys).compile().memory_analysis()
    xla_limit = m.temp_size_in_bytes + m.output_size_in_bytes + m.argument_size_in_bytes
    runner = me.ni.make_runner(me.build_algorithm(cfg, model, 0.05, 1.0), model.observe, 10, cfg.simulation.n_saves)
    xla_sim = runner.lower(model.w0, keys).compile().memory_analysis().temp_size_in_bytes
    est = cfg.memory_estimate(True)
    print(f"limit: estimate {est['limit'][0] / 2**20:.1f} MiB, XLA {xla_limit / 2**20:.1f} MiB; "
          f"simulation: estimate {est['simulation'][0] / 2**20:.2f} MiB, XLA {xla_sim / 2**20:.2f} MiB")
    assert xla_limit <= est["limit"][0] < 5 * xla_limit
    assert xla_sim <= est["simulation"][0] < 5 * xla_sim


# ---------------------------------------------------------------------------------------------
# a failed fast phase is named, before any simulation
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_flow_that_does_not_reach_gamma_is_named(capfd):
    """|grad L| < 1e-300 is never reached: Phi is NaN (diffrax with throw=False: no runtime error
    printed from inside XLA) and the run stops with the quantity, the time and 'no seed'."""
    with pytest.raises(NonFiniteError, match=r"the fast phase failed: Phi\(w0\).* is not finite at t=0 \(deterministic, no seed\)"):
        me.run({**SMALL, "limit": {"phi_tol": 1e-300}})
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.slow
def test_a_flow_that_ends_at_a_saddle_is_refused_naming_the_start():
    """The origin is a saddle of (xy - 1)^2 / 2 (loss 1/2): gradient flow from it stays there."""
    with pytest.raises(ConfigError, match=r"model\.init: the gradient flow from w0 = \[0\.0, 0\.0\] ends at a critical point with loss 0\.5"):
        me.run({**SMALL, "model": {"name": "hyperbola", "init": [0.0, 0.0]}})


def test_full_batch_minibatch_sgd_is_refused_in_the_config():
    with pytest.raises(ConfigError, match=r"noise\.batch_size=3 must be in \[1, n - 1 = 2\].*sigma\^2 = n/b - 1 = 0"):
        load_config({"model": {"name": "hyperbola", "n": 3}, "noise": {"name": "minibatch_sgd", "batch_size": 3}})
