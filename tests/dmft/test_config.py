"""Every validation rule raises a ConfigError naming the key (and the allowed range)."""

import pytest

import sgdlab
from sgdlab import ConfigError, load_config


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"algorithm": {"batch_fraction": 0.0}}, r"algorithm\.batch_fraction: Input should be greater than 0"),
        ({"algorithm": {"batch_fraction": 1.2}}, r"algorithm\.batch_fraction: Input should be less than or equal to 1"),
        ({"algorithm": {"eta": 0.5, "persistence_time": 0.2}}, r"algorithm: persistence_time tau=0.2 must be >= eta=0.5"),
        ({"algorithm": {"eta": 0.1, "batch_fraction": 0.1, "persistence_time": 0.5}}, r"\(1-b\) eta / b"),
        ({"algorithm": {"persistence_time": -1.0}}, r"algorithm\.persistence_time: Input should be greater than 0"),
        ({"algorithm": {"eta": 0.0}}, r"algorithm\.eta: Input should be greater than 0"),
        ({"algorithm": {"horizon": 0.05}}, r"horizon=0.05 must be >= eta"),
        ({"algorithm": {"save_every": 0}}, r"algorithm\.save_every"),
        ({"algorithm": {"save_every": 1000}}, r"save_every=1000 must be <= the number of steps"),
        ({"algorithm": {"name": "adam"}}, r"algorithm\.name: Input should be 'gd', 'sgd', 'persistent_sgd', 'sgf' or 'langevin'"),
        ({"algorithm": {"name": "gd", "batch_fraction": 0.5}}, r"batch_fraction must be 1 \(or omitted\) for gd"),
        ({"algorithm": {"name": "gd", "persistence_time": 1.0}}, r"persistence_time has no meaning for gd"),
        ({"algorithm": {"name": "sgd", "batch_fraction": 0.5, "persistence_time": 1.0}}, r"persistence_time of sgd is eta / b"),
        ({"algorithm": {"name": "sgd", "temperature": 0.1}}, r"temperature belongs to langevin only"),
        ({"algorithm": {"name": "langevin", "temperature": -0.1}}, r"algorithm\.temperature: Input should be greater than or equal to 0"),
        ({"algorithm": {"normalisation": "per_batch"}}, r"algorithm\.normalisation: Input should be 'unnormalised' or 'normalised'"),
        ({"problem": {"delta": -0.5}}, r"problem\.delta: Input should be greater than 0 \(got -0.5\)"),
        ({"problem": {"ridge": -0.1}}, r"problem\.ridge: Input should be greater than or equal to 0"),
        ({"problem": {"alpha": 0.0}}, r"problem\.alpha: Input should be greater than 0"),
        ({"problem": {"rho": 1.0}}, r"problem\.rho: Input should be less than 1"),
        ({"problem": {"sigma0": -1.0}}, r"problem\.sigma0"),
        ({"problem": {"loss": "hinge"}}, r"problem\.loss: loss = 'hinge': allowed: square, logistic, squared_hinge"),
        ({"problem": {"clusters": 4}}, r"problem\.clusters: Input should be 2 or 3"),
        ({"problem": {"clusters": 3}}, r"m0 must be nonzero for clusters = 3"),
        ({"problem": {"kappa": 1.0}}, r"kappa is the margin of loss = 'squared_hinge' only"),
        ({"problem": {"threshold": 0.5}}, r"threshold belongs to the three-cluster"),
        ({"problem": {"clusters": 3, "m0": 1.0, "threshold": -1.0}}, r"problem\.threshold: Input should be greater than 0"),
        ({"simulation": {"d": 1}}, r"simulation\.d: Input should be greater than or equal to 2"),
        ({"simulation": {"seeds": 0}}, r"seeds=0 must be >= 1"),
        ({"simulation": {"seeds": [1, 1]}}, r"distinct non-negative"),
        ({"simulation": {"dtype": "float16"}}, r"simulation\.dtype: Input should be 'float32' or 'float64'"),
        ({"simulation": {"test_samples": -5}}, r"simulation\.test_samples"),
        ({"simulation": {"steps": 5}}, r"simulation\.steps: unknown key"),
        ({"problme": {}}, r"problme: unknown key"),
    ],
)
def test_bad_values_raise_clear_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        load_config(cfg)


def test_defaults_are_the_default_experiment():
    c = load_config(None)
    assert (c.problem.alpha, c.problem.delta, c.problem.ridge, c.problem.loss) == (2.0, 0.5, 0.1, "square")
    a = c.algorithm
    assert (a.name, a.eta, a.batch_fraction, a.persistence_time, a.horizon) == ("persistent_sgd", 0.1, 0.3, 2.0, 15.0)
    assert (c.simulation.d, c.simulation.seeds) == (2000, 8)
    assert a.n_steps == 150


def test_resolution_of_algorithm_defaults_and_round_trip():
    gd = load_config({"algorithm": {"name": "gd"}})
    assert gd.algorithm.batch_fraction == 1.0 and gd.algorithm.persistence_time is None
    sgd = load_config({"algorithm": {"name": "sgd", "batch_fraction": 0.25, "eta": 0.1}})
    assert sgd.algorithm.persistence_time == pytest.approx(0.4)
    lang = load_config({"algorithm": {"name": "langevin", "temperature": 0.1}})
    assert lang.algorithm.batch_fraction == 1.0
    for cfg in (gd, sgd, lang, load_config(None)):
        again = sgdlab.Config.model_validate(cfg.model_dump())
        assert again.to_json() == cfg.to_json()


def test_toml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[algorithm\neta = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    good = tmp_path / "mine.toml"
    good.write_text("[algorithm]\nname = 'gd'\n")
    assert load_config(good).name == "mine"


def test_zero_start_is_a_valid_start():
    """m0 = sigma0 = 0 (w = 0): every test point is a tie (an error), and the run goes on."""
    import numpy as np

    import sgdlab
    from sgdlab.dmft import problem as gm

    two = sgdlab.load_config({}).problem.to_problem()
    assert float(gm.test_error(two, np.float64(0.0), np.float64(0.0))) == 1.0
    assert float(gm.test_error(two, np.float64(0.3), np.float64(0.0))) == 0.0
    cfg = {"problem": {"m0": 0.0, "sigma0": 0.0}, "algorithm": {"horizon": 0.5}, "simulation": {"d": 60, "seeds": 2},
           "theory": {"methods": ["dmft"], "samples": 400, "iterations": 3}}
    ds = sgdlab.run(cfg)
    assert np.all(np.isfinite(ds.test_error.values)) and np.all(ds.test_error.isel(t=0).values == 1.0)


@pytest.mark.parametrize(
    "patch,match",
    [
        ({"problem": {"alpha": 1e-300}}, r"problem\.alpha \* simulation\.d"),
        ({"algorithm": {"horizon": 1e308}}, r"horizon / eta"),
        ({"algorithm": {"eta": True}}, r"algorithm\.eta"),
        ({"simulation": {"d": "2000"}}, r"simulation\.d"),
        ({"problem": {"ridge": float("nan")}}, r"problem\.ridge"),
        ({"problem": {"m0": float("inf")}}, r"problem\.m0"),
        ({"simulation": {"seeds": 10**12}}, r"simulation\.seeds"),
        ({"problem": {"delta": 1e308}}, r"problem\.delta: Input should be less than or equal to 1000000"),
        ({"problem": {"sigma0": 2**63}}, r"problem\.sigma0: Input should be less than or equal to 1000000"),
        ({"theory": {"iterations": 2**63}}, r"theory\.iterations: Input should be less than or equal to 100000"),
    ],
)
def test_values_the_core_cannot_take_are_refused_naming_the_key(patch, match):
    with pytest.raises(ConfigError, match=match):
        load_config(patch)


def test_a_run_that_does_not_fit_in_memory_is_refused_before_it_starts(monkeypatch):
    monkeypatch.setattr("sgdlab.core.memory.available_bytes", lambda: 2**30)  # 1 GiB free
    with pytest.raises(ConfigError, match=r"needs about .* GiB.*lower simulation\.d"):
        load_config({"simulation": {"d": 20000, "seeds": 8}})
    with pytest.raises(ConfigError, match=r"the DMFT .*lower theory\.samples"):
        load_config({"simulation": {"d": 100}, "theory": {"methods": ["dmft"], "samples": 2_000_000}})
    load_config({"simulation": {"d": 500, "seeds": 4}})  # small runs are untouched


def test_theory_only_needs_a_theory_and_gives_method_by_t():
    with pytest.raises(ConfigError, match=r"simulation\.enabled = false needs a theory"):
        load_config({"simulation": {"enabled": False}})
    with pytest.raises(ConfigError, match=r"simulation\.enabled"):
        load_config({"simulation": {"enabled": "no"}})
    ds = sgdlab.run({"simulation": {"enabled": False}, "algorithm": {"horizon": 0.5},
                     "theory": {"methods": ["dmft"], "samples": 400, "iterations": 3}})
    assert list(ds.method.values) == ["dmft"] and ds.test_error.dims == ("method", "t")


def test_the_noise_study_checks_sizes_and_memory_like_a_run(monkeypatch):
    from sgdlab.dmft.noise import load_noise_config

    with pytest.raises(ConfigError, match=r"problem\.alpha \* simulation\.d"):
        load_noise_config({"simulation": {"d": 2**63}})
    monkeypatch.setattr("sgdlab.core.memory.available_bytes", lambda: 2**30)  # 1 GiB free
    with pytest.raises(ConfigError, match=r"needs about .* GiB.*lower simulation\.d"):
        load_noise_config({"simulation": {"d": 20000}})
    with pytest.raises(ConfigError, match=r"the DMFT .*lower theory\.samples"):
        load_noise_config({"theory": {"samples": 5_000_000}})
