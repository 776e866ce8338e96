"""A noise model of one's own: ``noise.name`` as a callable ``factory(sigma) -> NoiseInjection`` or
an import string. A user factory that rebuilds a built-in noise gives the built-in numbers bit for
bit; the limit solver reads the user's correlation (closed form); the simulation converges to the
limit of a noise no name gives (slow); every bad factory is refused naming ``noise.name``."""

import sys
from pathlib import Path

import numpy as np
import pytest

import sgdlab  # noqa: F401
from sgdlab.core.errors import ConfigError
from sgdlab.manifold import experiment as me
from sgdlab.manifold import limit as mf
from sgdlab.manifold.config import NOISE_NAMES, load_config
from sgdlab.manifold.noise import NOISE_NAMES as SOLVER_NOISE_NAMES

sys.path.insert(0, str(Path(__file__).parent))
import own_noises  # noqa: E402

TINY = {
    "name": "tiny",
    "model": {"name": "hyperbola"},
    "noise": {"name": "label_noise", "sigma": 1.0},
    "simulation": {"etas": [0.1, 0.05], "runs": 8, "tau_max": 0.4, "tau_save": 0.1},
    "limit": {"substeps": 2},
}


def _cfg(noise):
    return {**TINY, "noise": {"sigma": 1.0, **noise}}


def test_the_config_knows_the_solver_s_noise_names():
    assert tuple(NOISE_NAMES) == tuple(SOLVER_NOISE_NAMES)


@pytest.mark.parametrize("name", ["own_noises:my_label_noise", own_noises.my_label_noise])
def test_a_user_factory_of_a_built_in_noise_gives_its_numbers_bit_for_bit(name):
    builtin = me.run(_cfg({"name": "label_noise"}))
    own = me.run(_cfg({"name": name}))
    for var in builtin.data_vars:
        np.testing.assert_array_equal(own[var].values, builtin[var].values, err_msg=var)
    assert own.attrs["noise"] == "own_noises:my_label_noise"
    assert '"name": "own_noises:my_label_noise"' in own.attrs["config"]


def test_the_limit_reads_the_user_correlation():
    """Hyperbola, label noise with R = 4 I: the degenerate limit C(tau) = C0 exp(-4 tau)
    (C0 exp(-tau) for R = I, test_manifold_limits)."""
    ds = me.run({**_cfg({"name": "own_noises:loud_label_noise"}), "limit": {"substeps": 20}})  # RK4 error ~ (4 dtau)^4 / 120
    assert ds.attrs["noise_kind"] == mf.DEGENERATE
    c = ds.C.sel({"method": "limit"}).isel(eta=0, seed=0).values
    np.testing.assert_allclose(c, c[0] * np.exp(-4.0 * ds.t.values), rtol=1e-6)


def test_a_stored_user_noise_reruns_from_its_config():
    ds = me.run(_cfg({"name": own_noises.label_and_perturbation}))
    import json

    again = me.run(json.loads(ds.attrs["config"]))
    np.testing.assert_array_equal(again.C.values, ds.C.values)


@pytest.mark.parametrize(
    "noise,match",
    [
        ({"name": "own_noises:wrong_variance"}, r"noise\.name = 'own_noises:wrong_variance': the covariance of sample is not sigma\^2 correlation"),
        ({"name": "own_noises:biased"}, r"noise\.name = 'own_noises:biased': sample does not have mean 0"),
        ({"name": "own_noises:wrong_sigma"}, r"noise\.name = 'own_noises:wrong_sigma': the returned NoiseInjection has sigma = 2\.0, not the sigma = 1"),
        ({"name": "own_noises:not_an_injection"}, r"noise\.name = 'own_noises:not_an_injection' must return a sgdlab\.manifold\.injections\.NoiseInjection \(got dict\)"),
        ({"name": "own_noises:wrong_sample_shape"}, r"noise\.name = 'own_noises:wrong_sample_shape': sample returns shape \(2,\); expected \(1,\)"),
        ({"name": "own_noises:wrong_perturbation"}, r"noise\.name = 'own_noises:wrong_perturbation': perturb must return a Perturbation with the model's shapes"),
        ({"name": "own_noises:untraceable"}, r"noise\.name = 'own_noises:untraceable': sample or perturb does not trace under JAX"),
        ({"name": "own_noises:asymmetric", "_model": {"name": "hyperbola", "n": 3}}, r"noise\.name = 'own_noises:asymmetric': correlation is not symmetric"),
        ({"name": "own_noises:fails"}, r"noise\.name = 'own_noises:fails': calling it with sigma = 1 failed \(RuntimeError: no noise today\)"),
        ({"name": "own_noises:missing"}, r"noise\.name: .*'own_noises' has no attribute 'missing'"),
        ({"name": "no_such_module_xyz:f"}, r"noise\.name: .*cannot import module 'no_such_module_xyz'"),
        ({"name": "adam"}, r"noise\.name: 'adam'; allowed: label_noise, dropout, .*'package\.module:factory' string or a callable"),
        ({"name": 3}, r"noise\.name: .*allowed: label_noise"),
        ({"name": "own_noises:my_label_noise", "distribution": "gaussian"}, r"noise\.distribution belongs to the built-in noises"),
        ({"name": "own_noises:my_label_noise", "sigma": None}, r"noise\.sigma is required for the noise own_noises:my_label_noise"),
    ],
)
def test_bad_user_noises_are_refused_naming_the_key(noise, match):
    noise = dict(noise)
    model = noise.pop("_model", TINY["model"])
    cfg = {**_cfg(noise), "model": model}
    if noise.get("sigma", 1) is None:
        cfg["noise"].pop("sigma")
    with pytest.raises(ConfigError, match=match):
        load_config(cfg)


@pytest.mark.slow
def test_simulation_converges_to_the_limit_of_a_noise_no_name_gives():
    """Label noise plus a weight perturbation of half the scale on the hyperbola. The perturbation
    is non-degenerate and sets the time scale ``eta sigma^2 k``; its correlation block is
    ``(1/2)^2 I``, so the limit is perturbed GD's ``C0 exp(-2 tau)`` slowed four times,
    ``C0 exp(-tau / 2)``; the label-noise part acts on the scale ``eta^2 sigma^2 k`` and only adds
    to the O(eta) bias. Then the O(eta) bias and the extrapolation to 0 of test_manifold_limits
    (``sigma^2`` proportional to ``eta``, as for the built-in non-degenerate noises)."""
    from test_manifold_limits import check_order_one_bias, config

    noise = {"name": "own_noises:label_and_perturbation", "sigma": 0.2, "sigma_scaling": "sqrt_eta"}
    ds = me.run(config({"name": "hyperbola"}, noise, 0.05, 2.0, 0.1))
    assert ds.attrs["noise_kind"] == mf.NON_DEGENERATE
    c = ds.C.sel({"method": "limit"}).isel(eta=0, seed=0).values
    np.testing.assert_allclose(c, c[0] * np.exp(-0.5 * ds.t.values), rtol=1e-6)
    check_order_one_bias(ds, "C")
