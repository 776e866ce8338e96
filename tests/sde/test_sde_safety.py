"""Safety of the SDE wing: memory refused before allocating, divergence named with its time and
seed, and SGD beyond its stability limit flagged instead of silently fitted."""

import tracemalloc

import jax
import numpy as np
import pytest

from sgdlab.core import store
from sgdlab.core.command import CommonOptions, example_path, run_study_command
from sgdlab.core.errors import ConfigError, FlaggedResult, NonFiniteError
from sgdlab.sde import problems as fs
from sgdlab.sde import sgd, solvers
from sgdlab.sde.command import STUDY
from sgdlab.sde.config import load_config
from sgdlab.sde.experiment import run, stability_status
from sgdlab.sde.models import get_model
from sgdlab.sde.observables import get_observable, prepare_starts

ETAS = [0.25, 0.125, 0.0625]


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tree, keys",
    [
        # exact moments: n = 10^5 blocks of D^4 = 1001^4 floats (about 10^9 GiB)
        ({"problem": {"kind": "least_squares", "n_samples": 100_000, "dim": 1000}}, "problem.n_samples or problem.dim (or set solver.method = 'monte_carlo')"),
        # SME-1 with weak2: 10^6 paths per chunk of n d^2 = 10^11 floats
        ({"problem": {"kind": "logistic", "n_samples": 100_000, "dim": 1000}, "study": {"models": ["sme1"]},
          "solver": {"method": "monte_carlo", "paths": 10_000_000, "chunk": 1_000_000}}, "or drop sme1 from study.models"),
        # SGD with a batch of 10^4 on 10^6 paths of d = 1000
        ({"problem": {"kind": "logistic", "n_samples": 100_000, "dim": 1000, "batch_size": 10_000}, "study": {"models": ["gf"]},
          "solver": {"method": "monte_carlo", "paths": 1_000_000, "chunk": 1_000_000}}, "(or problem.batch_size)"),
    ],
)
def test_a_config_that_needs_terabytes_is_refused_naming_the_keys(tree, keys):
    with pytest.raises(ConfigError, match=r"needs about [0-9.e+]+ GiB, more than 0.8 of the [0-9.e+]+ GiB of memory available now") as err:
        run(tree)
    assert keys in str(err.value)


def test_the_examples_fit_in_a_gibibyte():
    for name in ("default", "closed_form", "two_point", "weak_order", "logistic_mc"):
        cfg = load_config(example_path("sde", name))
        assert sum(v[0] for v in cfg.memory_estimate().values()) < 2**30, name


@pytest.mark.slow
def test_the_exact_estimate_bounds_the_traced_peak():
    """Exact moments are NumPy: tracemalloc sees every array; the estimate is above the peak, by
    less than a factor 2."""
    cfg = load_config({"problem": {"kind": "least_squares", "n_samples": 1500, "dim": 4},
                       "study": {"models": ["smf", "smf_expected_gradient"], "observables": ["second_moment"], "etas": ETAS},
                       "solver": {"method": "exact"}})
    run(cfg)  # compile first: XLA's memory is not traced, NumPy's is
    tracemalloc.start()
    run(cfg)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    estimate = cfg.memory_estimate()["exact"][0]
    assert peak <= estimate < 2 * peak, (estimate, peak)


@pytest.mark.slow
def test_the_monte_carlo_estimate_bounds_what_xla_allocates():
    """Against XLA's compiled memory analysis of every chunk kernel of the run: above the
    largest, by less than a factor 2.5."""
    for tree in (
        {"problem": {"kind": "logistic", "n_samples": 200, "dim": 20, "batch_size": 4}, "study": {"models": ["gf", "smf", "svag"], "observables": ["mean", "inner"]},
         "solver": {"paths": 2000, "chunk": 2000}},
        {"problem": {"kind": "logistic", "n_samples": 50, "dim": 60}, "study": {"models": ["sme2"]}, "solver": {"paths": 500, "chunk": 500}},
        {"problem": {"kind": "two_layer", "n_samples": 100, "dim": 5, "width": 6}, "study": {"models": ["smf", "sme1"]},
         "solver": {"scheme": "talay_tubaro", "paths": 2000, "chunk": 2000}},
    ):
        cfg = load_config(tree)
        problem = cfg.problem.to_problem()
        x0s, obs = prepare_starts(problem, cfg.problem.starting_points(cfg.copies), [get_observable(o) for o in cfg.study.observables])
        size, key = min(cfg.solver.chunk, cfg.solver.paths), jax.random.key(0)

        def bytes_of(fn, *args, **kwargs):
            m = fn.lower(*args, **kwargs).compile().memory_analysis()
            return m.temp_size_in_bytes + m.output_size_in_bytes + m.argument_size_in_bytes

        xla = [bytes_of(sgd._sgd_chunk, problem, 0.1, x0s, 10, key, observables=obs, n_paths=size)]
        for m in cfg.study.models:
            if m == "svag":
                xla.append(bytes_of(sgd._svag_chunk, problem, 0.1, x0s, 10, key, svag=get_model(m, 4), observables=obs, n_paths=size))
            else:
                xla.append(bytes_of(solvers._sde_chunk, problem, 0.1, x0s, 0.05, 10, key, model=get_model(m, 4), scheme=cfg.solver.scheme,
                                    observables=obs, n_paths=size))
        estimate = cfg.memory_estimate()["monte_carlo"][0]
        print(f"{tree['problem']}: estimate {estimate / 2**20:.1f} MiB, XLA {max(xla) / 2**20:.1f} MiB")
        assert max(xla) <= estimate < 2.5 * max(xla)


# ---------------------------------------------------------------------------------------------
# divergence and instability
# ---------------------------------------------------------------------------------------------


def test_max_sample_curvature_is_the_largest_per_sample_hessian_eigenvalue(monkeypatch):
    problem = fs.random_two_layer_network(0, 12, 3, 4)
    x0s = np.stack([np.ones(problem.dim), -0.5 * np.ones(problem.dim)])
    hess = np.concatenate([np.asarray(jax.vmap(jax.hessian(problem.loss), in_axes=(None, 0))(x, problem.samples)) for x in x0s])
    want = np.abs(np.linalg.eigvalsh(hess)).max()
    assert fs.max_sample_curvature(problem, x0s) == pytest.approx(want, rel=1e-12)
    assert fs.max_sample_curvature(fs.quadratic_1d([20.0, 40.0, 60.0]), [[1.0]]) == pytest.approx(60.0, rel=1e-14)
    # above the dense size: power iteration, a lower bound, exact for rank-one Hessians (+ ridge)
    monkeypatch.setattr(fs, "DENSE_CURVATURE_FLOATS", 0)
    assert 0.9 * want < fs.max_sample_curvature(problem, x0s) <= want * (1 + 1e-12)
    ls = fs.random_least_squares(0, 30, 6, ridge=0.3)
    z = np.asarray(ls.samples["z"])
    assert fs.max_sample_curvature(ls, np.ones((1, 6))) == pytest.approx(np.max(np.sum(z**2, axis=1)) + 0.3, rel=1e-12)


def test_stability_status():
    assert stability_status(ETAS, 7.9) == "complete"
    flagged = stability_status(ETAS, 10.0)
    assert flagged.startswith("flagged: SGD is beyond its stability limit at study.etas = 0.25 (eta * lambda_max > 2, lambda_max = 10")
    assert "use etas below 0.2" in flagged


def test_sgd_beyond_its_stability_limit_is_flagged_not_fitted(tmp_path):
    """a = 20, 40, 60 at eta = 1/16: a step on the stiffest sample multiplies by 1 - 60/16 = -2.75;
    over T = 1 (16 steps) SGD grows but stays finite. This used to exit 0 with fitted orders near
    13; now the Dataset is kept, flagged, and the command exits with FlaggedResult."""
    cfg = {"name": "unstable", "problem": {"a": [20.0, 40.0, 60.0], "b": [1.0, 1.0, 1.0]},
           "study": {"models": ["gf", "smf"], "etas": [1 / 16, 1 / 32, 1 / 64, 1 / 128]}}
    ds = run(cfg)
    assert ds.attrs["status"].startswith("flagged: SGD is beyond its stability limit at study.etas = 0.0625 ")
    assert np.all(np.isfinite(ds.sgd.values))  # finite: only the flag tells
    with pytest.raises(FlaggedResult, match="beyond its stability limit"):
        run_study_command(STUDY, cfg, CommonOptions(out=tmp_path, quiet=True, plot=False))
    assert store.load(tmp_path / "unstable.zarr").attrs["status"] == ds.attrs["status"]
    # the same problem within the limit (eta <= 1/32: 60/32 < 2) is complete
    assert run({**cfg, "study": {**cfg["study"], "etas": [1 / 32, 1 / 64, 1 / 128]}}).attrs["status"] == "complete"


def test_divergence_names_the_time_and_the_seed_and_keeps_the_partial_result(tmp_path):
    cfg = {"name": "boom", "problem": {"a": [20.0, 30.0], "b": [1.0, -1.0]},
           "study": {"models": ["gf", "smf"], "horizon": 100.0, "etas": ETAS},
           "solver": {"method": "monte_carlo", "paths": 200, "chunk": 200, "seed": 7}}
    with pytest.raises(NonFiniteError, match=r"of sgd at eta = 0\.25 \(monte_carlo\) is .* at t=100 \(the horizon; seed 7\)") as err:
        run_study_command(STUDY, cfg, CommonOptions(out=tmp_path, quiet=True, plot=False))
    assert "beyond its stability limit" in str(err.value)  # the likely cause, named
    kept = store.load(tmp_path / "boom.zarr")
    assert kept.attrs["status"].startswith("failed: ") and np.all(np.isnan(kept.value.values))
    with pytest.raises(NonFiniteError, match=r"at t=100 \(the horizon; exact moments, no seed\)"):
        run({**cfg, "solver": {"method": "auto"}})
