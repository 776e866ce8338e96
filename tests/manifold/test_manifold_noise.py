"""Noise injections and noisy GD (sgdlab.manifold.noise) on the manifold models.

Statistical tolerances are five standard errors of the sample size used; identities are exact up
to round-off.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdlab  # noqa: F401  (float64)
from sgdlab.manifold import noise as ni
from sgdlab.manifold import models as mm
from sgdlab.manifold import limit as mf

N_DRAWS = 20_000


def sizes_of(model):
    return ni.Sizes(model.n_samples, model.n_units, model.n_params)


@pytest.mark.parametrize(
    "injection",
    [
        ni.label_noise(0.7),
        ni.label_noise(0.7, "rademacher"),
        ni.dropout(0.5),
        ni.dropout(0.5, "gaussian"),
        ni.dropconnect(0.3),
        ni.weight_perturbation(0.2),
        ni.langevin_tilt(1.3),
        ni.minibatch(2, 5),
        ni.chain(ni.label_noise(0.5), ni.dropout(0.25)),
    ],
    ids=lambda i: i.name,
)
def test_injection_mean_zero_and_covariance_sigma2_r(injection):
    sizes = ni.Sizes(5, 3, 4)
    keys = jax.random.split(jax.random.key(1), N_DRAWS)
    zeta = np.asarray(jax.vmap(lambda k: injection.sample(k, sizes, jnp.float64))(keys))
    m = injection.zeta_size(sizes)
    assert zeta.shape == (N_DRAWS, m)
    cov_expected = injection.sigma**2 * injection.correlation(sizes)
    sd = np.sqrt(np.diag(cov_expected))
    assert np.all(np.abs(zeta.mean(0)) < 5 * sd / np.sqrt(N_DRAWS))
    centred = zeta - zeta.mean(0)
    prod = centred[:, :, None] * centred[:, None, :]
    cov = prod.mean(0)
    se = prod.std(0) / np.sqrt(N_DRAWS)  # standard error of each covariance entry
    assert np.all(np.abs(cov - cov_expected) < 5 * se + 1e-12), np.abs(cov - cov_expected) / se


def test_dropout_masks_are_inverted_bernoulli():
    sigma = 0.5
    q = ni.keep_probability(sigma)
    zeta = np.asarray(jax.vmap(lambda k: ni.dropout(sigma).sample(k, ni.Sizes(1, 6, 1), jnp.float64))(jax.random.split(jax.random.key(0), 2000)))
    values = np.unique(np.round(1 + zeta, 12))
    np.testing.assert_allclose(values, [0.0, 1 / q])
    mb = np.asarray(jax.vmap(lambda k: ni.minibatch(2, 5).sample(k, ni.Sizes(5, 0, 1), jnp.float64))(jax.random.split(jax.random.key(0), 200)))
    np.testing.assert_allclose((1 + mb).sum(1), 5.0)  # exactly b samples of weight n/b
    assert set(np.unique(np.round(1 + mb, 12))) == {0.0, 2.5}


@pytest.mark.parametrize("name", ["hyperbola", "two_unit", "diagonal", "tanh"])
def test_injected_loss_at_zero_noise_is_the_loss(name):
    model = mm.make_model(name)
    sizes = sizes_of(model)
    w = model.w0 + 0.1
    noises = [ni.label_noise(0.3), ni.dropconnect(0.3), ni.weight_perturbation(0.1), ni.langevin_tilt(0.5), ni.minibatch(1, model.n_samples)]
    if model.n_units:
        noises.append(ni.dropout(0.3))
    noises.append(ni.chain(*noises))
    for inj in noises:
        lh = ni.model_loss_hat(model.apply, model.x, model.y, model.n_units, inj)
        assert float(lh(w, jnp.zeros(inj.zeta_size(sizes)))) == pytest.approx(float(model.loss(w)), rel=1e-14), inj.name


def test_steps_are_the_documented_updates():
    """SGLD: w - eta grad L + eta zeta; perturbed GD: w - eta grad L(w + zeta); DropConnect:
    w - eta (1 + zeta) grad L(w (1 + zeta)); label noise on the hyperbola: the residual shifts by zeta."""
    model = mm.hyperbola()
    sizes, eta, key = sizes_of(model), 0.1, jax.random.key(3)
    w = jnp.asarray([1.3, 0.4])
    grad = jax.grad(model.loss)
    for inj, expected in (
        (ni.langevin_tilt(0.5), lambda zeta: w - eta * grad(w) + eta * zeta),
        (ni.weight_perturbation(0.5), lambda zeta: w - eta * grad(w + zeta)),
        (ni.dropconnect(0.5, "gaussian"), lambda zeta: w - eta * (1 + zeta) * grad(w * (1 + zeta))),
        (ni.label_noise(0.5), lambda zeta: w - eta * (w[0] * w[1] - 1 - zeta[0]) * jnp.asarray([w[1], w[0]])),
    ):
        alg = ni.noise_injected_gd(model.apply, model.x, model.y, sizes, inj, eta)
        new = alg.step(alg.init(w), key).w
        zeta = inj.sample(key, sizes, jnp.float64)
        np.testing.assert_allclose(new, expected(zeta), rtol=1e-14, atol=1e-15, err_msg=inj.name)
    # Dropout on the two-unit network: unit j's product p_j is scaled by 1 + zeta_j
    two = mm.two_unit_network()
    inj = ni.dropout(0.5)
    zeta = inj.sample(key, sizes_of(two), jnp.float64)
    u = jnp.asarray([0.9, 1.1, 0.4, 0.3])
    alg = ni.noise_injected_gd(two.apply, two.x, two.y, sizes_of(two), inj, eta)
    r = (1 + zeta[0]) * u[0] * u[1] + (1 + zeta[1]) * u[2] * u[3] - 1
    g = r * jnp.asarray([(1 + zeta[0]) * u[1], (1 + zeta[0]) * u[0], (1 + zeta[1]) * u[3], (1 + zeta[1]) * u[2]])
    np.testing.assert_allclose(alg.step(alg.init(u), key).w, u - eta * g, rtol=1e-14)


def test_chain_composes_pieces():
    model = mm.two_unit_network()
    sizes = sizes_of(model)
    chained = ni.chain(ni.label_noise(0.4), ni.dropout(0.2), ni.langevin_tilt(0.8))
    assert chained.zeta_size(sizes) == 1 + 2 + 4
    corr = chained.correlation(sizes)
    np.testing.assert_allclose(np.diag(corr), [1, 0.25, 0.25, 4, 4, 4, 4])
    zeta = jnp.arange(1.0, 8.0) / 10
    pert = chained.perturb(ni.no_perturbation(sizes), zeta, sizes)
    np.testing.assert_allclose(pert.label_shift, [0.1])
    np.testing.assert_allclose(pert.unit_scale, [1.2, 1.3])
    np.testing.assert_allclose(pert.tilt, [0.4, 0.5, 0.6, 0.7])
    lh = ni.model_loss_hat(model.apply, model.x, model.y, model.n_units, chained)
    w = jnp.asarray([0.9, 1.1, 0.4, 0.3])
    expected = 0.5 * (1.2 * 0.99 + 1.3 * 0.12 - 1 - 0.1) ** 2 - float(zeta[3:] @ w)
    assert float(lh(w, zeta)) == pytest.approx(expected, rel=1e-13)


def test_minibatch_gradient_is_unbiased():
    """E over batches of grad L_hat = grad L (off Gamma, where per-sample gradients differ)."""
    model = mm.hyperbola(n=4)
    sizes = sizes_of(model)
    inj = ni.minibatch(1, 4)
    lh = ni.model_loss_hat(model.apply, model.x, model.y, 0, inj)
    w = jnp.asarray([1.4, 0.3])
    grads = np.asarray(jax.vmap(lambda k: jax.grad(lh)(w, inj.sample(k, sizes, jnp.float64)))(jax.random.split(jax.random.key(2), N_DRAWS)))
    se = grads.std(0) / np.sqrt(N_DRAWS)
    assert np.all(grads.std(0) > 1e-3)  # the batches do differ
    assert np.all(np.abs(grads.mean(0) - np.asarray(jax.grad(model.loss)(w))) < 5 * se)


def test_anticorrelated_perturbed_gd_is_perturbed_gd_in_z():
    """Anti-PGD w_{k+1} = w_k - eta grad L(w_k) + xi_{k+1} - xi_k; z = w - xi follows
    z_{k+1} = z_k - eta grad L(z_k + xi_k) exactly."""
    model = mm.two_unit_network()
    eta, sigma, steps = 0.05, 0.1, 200
    anti = ni.anticorrelated_perturbed_gd(model.loss, sigma, eta)
    keys = jax.random.split(jax.random.key(4), steps)
    state = anti.init(model.w0)
    z = np.asarray(model.w0)
    grad = jax.jit(jax.grad(model.loss))
    step = jax.jit(anti.step)
    for k in keys:
        xi = np.asarray(state.xi)
        state = step(state, k)
        z = z - eta * np.asarray(grad(jnp.asarray(z + xi)))
        np.testing.assert_allclose(np.asarray(state.w - state.xi), z, rtol=1e-11, atol=1e-12)
    assert np.abs(np.asarray(state.xi)).max() > 0.01


def test_minibatch_sgd_leaves_c_fixed_to_machine_precision():
    """On Gamma every per-sample gradient vanishes: minibatch SGD does not move C = x^2 - y^2,
    while label noise with the same steps moves it by O(1)."""
    model = mm.hyperbola(n=3)
    phi0 = mf.jitted_gradient_flow_limit(model.loss)(model.w0)
    c0 = float(phi0[0] ** 2 - phi0[1] ** 2)
    eta, steps, runs = 0.05, 4000, 8
    sizes = sizes_of(model)
    out = {}
    for inj in (ni.minibatch(1, 3), ni.label_noise(1.0)):
        alg = ni.noise_injected_gd(model.apply, model.x, model.y, sizes, inj, eta)
        run = ni.make_runner(alg, model.observe, steps // 4, 4)
        _, obs = run(phi0, ni.run_keys(0, runs))
        out[inj.name] = np.asarray(obs["C"])
    # round-off bound: a relative error of a few eps per step, accumulated linearly
    assert np.abs(out["minibatch_sgd"] - c0).max() < steps * 4 * np.finfo(float).eps * abs(c0)
    # label noise, tau = eta^2 sigma^2 k = 10 / 3 in units of its rate 1/n: C shrinks by e^{-10/9}
    assert np.abs(out["label_noise"][:, -1] - c0).mean() > 0.3 * abs(c0)


def test_runner_is_deterministic_and_vmapped():
    model = mm.two_unit_network()
    alg = ni.noise_injected_gd(model.apply, model.x, model.y, sizes_of(model), ni.dropout(0.3), 0.05)
    run = ni.make_runner(alg, model.observe, 10, 3)
    keys = ni.run_keys(7, 5)
    (_, a), (_, b) = run(model.w0, keys), run(model.w0, keys)
    assert a["delta"].shape == (5, 4)
    np.testing.assert_array_equal(np.asarray(a["delta"]), np.asarray(b["delta"]))
    assert len(np.unique(np.asarray(a["delta"][:, -1]))) == 5  # independent runs
    np.testing.assert_allclose(np.asarray(a["delta"][:, 0]), float(model.observe(model.w0)["delta"]))
