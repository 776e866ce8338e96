"""The generic limit solver (sgdlab.manifold.limit) against closed forms (spec 04).

Hyperbola ``L = (xy - 1)^2 / 2`` on Gamma ``{xy = 1}``, parametrised by ``C = x^2 - y^2``
(``x^2 = (C + sqrt(C^2 + 4)) / 2``, ``s^2 = x^2 + y^2 = sqrt(C^2 + 4)``, unit tangent
``(x, -y) / s``): label noise ``dW/dtau = -(C / 2 s^2) (x, -y)`` (so ``C' = -C``), perturbed GD
``-(C / s^2) (x, -y)`` (``C' = -2 C``), SGLD drift ``-(C / 2 s^4)(x, -y) + (y, x) / s^4`` (tangent part
``-(1/4) grad_Gamma log pdet H``, normal part half the curvature ``II(t, t) = 2 (y, x) / s^4``).
Two-unit network ``(a1 b1 + a2 b2 - 1)^2 / 2``: Dropout at a balanced point gives
``delta' = -(1 - delta^2) delta``; label noise ``dW/dtau = -w/2 + grad f / |grad f|^2`` (``c_j' = -c_j``).

Tolerances: identities of the formulas at points of Gamma to 1e-9 (Phi tolerance 1e-12 and
round-off); integrators by their measured convergence order on halved steps; the second
derivative of Phi against finite differences by the Richardson estimate of the finite-difference
error plus the stated Phi tolerance over h^2.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgdlab  # noqa: F401  (float64)
from sgdlab.manifold import noise as ni
from sgdlab.manifold import models as mm
from sgdlab.manifold import limit as mf


def hyperbola_point(c):
    x = np.sqrt((c + np.sqrt(c * c + 4)) / 2)
    return np.array([x, 1 / x])


def balanced_two_unit_point(delta):
    p = np.array([(1 + delta) / 2, (1 - delta) / 2])
    return np.sqrt(np.array([p[0], p[0], p[1], p[1]]))


_LOSS_HATS = {}


def loss_hat_of(model, injection):
    """``(L_hat, zeta_dim, correlation)``; the same function object for the same (model, noise), so
    the solver's compiled pieces are reused (the limit in rescaled time does not depend on sigma)."""
    key = (id(model), injection.name)
    if key not in _LOSS_HATS:
        sizes = ni.Sizes(model.n_samples, model.n_units, model.n_params)
        lh = ni.model_loss_hat(model.apply, model.x, model.y, model.n_units, injection)
        _LOSS_HATS[key] = (model, (lh, injection.zeta_size(sizes), injection.correlation(sizes)))
    return _LOSS_HATS[key][1]


@pytest.fixture(scope="module")
def hyp():
    return mm.hyperbola()


@pytest.fixture(scope="module")
def two():
    return mm.two_unit_network()


def test_phi_of_hyperbola_conserves_c_and_lands_on_gamma(hyp):
    """Gradient flow conserves C: Phi(x0, y0) is the point of Gamma with the same C."""
    phi = mf.jitted_gradient_flow_limit(hyp.loss)
    for w0 in ([2.0, 0.6], [0.5, 1.8], [1.5, 1.4], [-2.5, -0.2]):
        w0 = np.asarray(w0)
        c0 = w0[0] ** 2 - w0[1] ** 2
        exact = hyperbola_point(c0) * np.sign(w0[0])  # the branch of xy = 1 in the start's quadrant
        got = np.asarray(phi(jnp.asarray(w0)))
        # stated tolerance: |grad L| < 1e-12 at the end; lambda_min = x^2 + y^2 >= 2
        assert np.abs(got - exact).max() < 1e-11, (w0, got, exact)


def test_tangent_space_and_rank_threshold(hyp):
    w = hyperbola_point(1.3)
    assert mf.hessian_rank(hyp.loss, w) == 1
    ts = mf.tangent_space(hyp.loss, jnp.asarray(w), 1)
    t = np.array([w[0], -w[1]]) / np.hypot(*w)
    np.testing.assert_allclose(ts.tangent, np.outer(t, t), atol=1e-14)
    np.testing.assert_allclose(ts.pinv @ mf.hessian(hyp.loss, jnp.asarray(w)), np.eye(2) - np.outer(t, t), atol=1e-13)
    # away from Gamma (xy = 0.6: det H = (1 - xy)(3xy - 1) > 0) both eigenvalues are O(1): rank 2
    assert mf.hessian_rank(hyp.loss, np.array([1.0, 0.6])) == 2
    # 1e-9 off Gamma the second eigenvalue (about -(xy - 1)) sits within a factor 100 of the
    # threshold 1e-8 lambda_max: the documented refusal
    off = w * np.sqrt(1 + 1e-9)
    with pytest.raises(ValueError, match="no gap"):
        mf.hessian_rank(hyp.loss, off)


def reg_and_d(model, injection, w):
    lh, m, r = loss_hat_of(model, injection)
    return jax.jit(lambda v: (mf.regulariser(lh, m, r)(v), mf.noise_coefficient(lh, m)(v)))(jnp.asarray(w))


def test_noise_coefficients_closed_forms(hyp, two):
    """Reg and D of each injection (Shalova et al. 2024, section 5)."""
    w = hyperbola_point(0.7)
    reg, d = reg_and_d(hyp, ni.label_noise(1.0), w)
    assert float(reg) == pytest.approx(0.5)  # (1/2) tr (1/n) I_n, n = 1
    np.testing.assert_allclose(d[:, 0], -np.array([w[1], w[0]]), atol=1e-14)  # -grad f
    reg, _ = reg_and_d(hyp, ni.weight_perturbation(0.1), w)
    assert float(reg) == pytest.approx(0.5 * float(w @ w))  # Laplacian L / 2 = (x^2 + y^2)/2
    reg, d = reg_and_d(hyp, ni.langevin_tilt(1.0), w)
    assert float(reg) == 0.0
    np.testing.assert_allclose(d, -np.eye(2), atol=1e-15)
    q = np.array([0.9, 1.1, 0.4, 0.2])
    reg, _ = reg_and_d(two, ni.dropout(0.3), q)
    assert float(reg) == pytest.approx(0.5 * ((q[0] * q[1]) ** 2 + (q[2] * q[3]) ** 2))  # (1/2) sum_j p_j^2
    reg, d = reg_and_d(mm.hyperbola(n=3), ni.minibatch(1, 3), w)
    assert float(reg) == 0.0  # linear in zeta
    assert np.abs(np.asarray(d)).max() < 1e-14  # per-sample gradients vanish on Gamma


@pytest.mark.parametrize("c", [-2.0, 0.4, 3.0])
def test_hyperbola_drifts_match_closed_forms(hyp, c):
    w = hyperbola_point(c)
    x, y = w
    s2 = x * x + y * y
    tang = np.array([x, -y])
    wj = jnp.asarray(w)
    lh, m, r = loss_hat_of(hyp, ni.label_noise(1.0))
    drift, diffusion = mf.degenerate_coefficients(hyp.loss, lh, m, 1, r)
    np.testing.assert_allclose(drift(wj), -c / (2 * s2) * tang, atol=1e-10)
    assert np.abs(np.asarray(diffusion(wj))).max() < 1e-12  # P_T D = 0: an ODE
    lh, m, r = loss_hat_of(hyp, ni.weight_perturbation(0.2))
    np.testing.assert_allclose(mf.non_degenerate_drift(hyp.loss, lh, m, 1, r)(wj), -c / s2 * tang, atol=1e-10)
    lh, m, r = loss_hat_of(hyp, ni.langevin_tilt(1.0))
    drift, diffusion = mf.degenerate_coefficients(hyp.loss, lh, m, 1, r)
    np.testing.assert_allclose(drift(wj), -c / (2 * s2**2) * tang + np.array([y, x]) / s2**2, atol=1e-10)
    b = np.asarray(diffusion(wj))
    grad_c = 2 * tang
    assert grad_c @ b @ b.T @ grad_c == pytest.approx(4 * s2, rel=1e-12)  # d<C> = 4 (x^2 + y^2) dtau
    # C is a martingale of the limit SDE: grad C . drift + (1/2) tr(Hess C  B B^T) = 0
    ito = grad_c @ np.asarray(drift(wj)) + 0.5 * np.trace(np.diag([2.0, -2.0]) @ b @ b.T)
    assert abs(ito) < 1e-10


@pytest.mark.parametrize("delta", [-0.6, 0.1, 0.5])
def test_two_unit_drifts_match_closed_forms(two, delta):
    w = balanced_two_unit_point(delta)
    wj = jnp.asarray(w)
    lh, m, r = loss_hat_of(two, ni.dropout(0.2))
    v = np.asarray(mf.non_degenerate_drift(two.loss, lh, m, 1, r)(wj))
    grad_delta = np.array([w[1], w[0], -w[3], -w[2]])
    assert grad_delta @ v == pytest.approx(-(1 - delta**2) * delta, abs=1e-10)
    # label noise at an unbalanced point of Gamma: -w/2 + grad f / |grad f|^2, so c_j' = -c_j
    u = np.array([1.3, 0.5, 0.6, 0.5])
    u[3] = (1 - u[0] * u[1]) / u[2]
    lh, m, r = loss_hat_of(two, ni.label_noise(1.0))
    drift, _ = mf.degenerate_coefficients(two.loss, lh, m, 1, r)
    gf = np.array([u[1], u[0], u[3], u[2]])
    np.testing.assert_allclose(drift(jnp.asarray(u)), -u / 2 + gf / (gf @ gf), atol=1e-10)


@pytest.mark.slow
def test_label_noise_drift_is_minus_trace_gradient_on_networks():
    """Label noise: (1/2) d^2Phi[D D^T] = -(1/(4n)) grad_Gamma tr H (Li-Wang-Arora, section 5), on the
    diagonal network (n = 6) and the tanh network (n = 4), whose answers are not built in; and SGLD's
    tangent drift is -(1/4) grad_Gamma log pdet H."""
    for model in (mm.diagonal_network(), mm.tanh_network()):
        w = mf.jitted_gradient_flow_limit(model.loss)(model.w0)
        rank = mf.hessian_rank(model.loss, w)
        assert rank == model.n_samples
        ts = jax.jit(lambda v: mf.tangent_space(model.loss, v, rank))(w)  # noqa: B023
        lh, m, r = loss_hat_of(model, ni.label_noise(1.0))
        drift, _ = mf.degenerate_coefficients(model.loss, lh, m, rank, r)
        tr_grad = jax.jit(jax.grad(lambda v: jnp.trace(mf.hessian(model.loss, v))))(w)  # noqa: B023
        expected = -ts.tangent @ tr_grad / (4 * model.n_samples)
        assert np.abs(expected).max() > 1e-2
        np.testing.assert_allclose(drift(w), expected, atol=1e-9)
        lh, m, r = loss_hat_of(model, ni.langevin_tilt(1.0))
        drift, _ = mf.degenerate_coefficients(model.loss, lh, m, rank, r)
        h0_pinv = ts.pinv
        logpdet_grad = jax.jit(jax.grad(lambda v: jnp.sum(mf.hessian(model.loss, v) * h0_pinv)))(w)  # noqa: B023  d log pdet H = tr(H^+ dH)
        np.testing.assert_allclose(ts.tangent @ drift(w), -0.25 * ts.tangent @ logpdet_grad, atol=1e-9)


@pytest.mark.parametrize("which", ["hyperbola", pytest.param("two_unit", marks=pytest.mark.slow)])
def test_phi_second_derivative_matches_finite_differences(which, hyp, two):
    """Explicit d^2Phi[Sigma] (autodiff third derivatives) against central differences of Phi."""
    model = hyp if which == "hyperbola" else two
    start = np.array([1.7, 0.8]) if which == "hyperbola" else np.array([1.1, 0.7, 0.4, 0.9])
    w = mf.jitted_gradient_flow_limit(model.loss, 1e-13)(jnp.asarray(start))
    rank = mf.hessian_rank(model.loss, w)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((model.n_params, model.n_params))
    sigma = a @ a.T / model.n_params
    exact = np.asarray(mf.phi_second_derivative(model.loss, w, jnp.asarray(sigma), rank))
    h = 4e-3
    fd_h = mf.phi_second_derivative_fd(model.loss, w, sigma, h, tol=1e-13)
    fd_h2 = mf.phi_second_derivative_fd(model.loss, w, sigma, h / 2, tol=1e-13)
    richardson = (4 * fd_h2 - fd_h) / 3
    # central differences: error c h^2 (Richardson removes it, leaving O(h^4)) plus the Phi
    # error tol / h^2 times the weight of Sigma
    truncation = np.abs(fd_h - fd_h2).max()
    floor = 100 * 1e-13 / (h / 2) ** 2 * np.abs(np.linalg.eigvalsh(sigma)).sum()
    assert np.abs(exact).max() > 0.1  # a nontrivial test
    assert np.abs(richardson - exact).max() < 0.1 * truncation + floor, (exact, fd_h, fd_h2)
    # and the plain second-order difference converges at order 2 towards the explicit value
    e1, e2 = np.abs(fd_h - exact).max(), np.abs(fd_h2 - exact).max()
    assert e2 < e1 / 3 or e2 < floor


def _integration_errors(fn, exact, substeps):
    return [np.abs(fn(s) - exact).max() for s in substeps]


def test_limit_flows_reproduce_closed_forms_at_fourth_order(hyp, two):
    """solve_limit from an off-Gamma start: fast phase Phi, then RK4 with projection; the error
    against the closed form falls by about 2^4 when the step halves."""
    tau_save, n_saves = 0.5, 6
    tau = np.arange(n_saves + 1) * tau_save
    w0 = np.asarray(hyp.w0)
    c0 = w0[0] ** 2 - w0[1] ** 2

    def hyperbola_c(noise):
        def run(substeps):
            lh, m, r = loss_hat_of(hyp, noise)
            sol = mf.solve_limit(hyp.loss, lh, m, hyp.w0, tau_save, n_saves, substeps=substeps, correlation=r)
            return sol.w[0, :, 0] ** 2 - sol.w[0, :, 1] ** 2, sol.noise.kind

        return run

    for noise, rate, kind in ((ni.label_noise(1.0), 1.0, mf.DEGENERATE), (ni.weight_perturbation(0.1), 2.0, mf.NON_DEGENERATE)):
        run = hyperbola_c(noise)
        (c1, k1), (c2, _) = run(1), run(2)
        assert k1 == kind
        e1, e2 = np.abs(c1 - c0 * np.exp(-rate * tau)).max(), np.abs(c2 - c0 * np.exp(-rate * tau)).max()
        assert e2 < 1e-3 and (e2 < e1 / 10 or e2 < 1e-10), (noise.name, e1, e2)

    # two-unit Dropout from a balanced start: delta^2 / (1 - delta^2) = K exp(-2 tau)
    lh, m, r = loss_hat_of(two, ni.dropout(0.2))
    errs = []
    for substeps in (1, 2):
        sol = mf.solve_limit(two.loss, lh, m, two.w0, tau_save, n_saves, substeps=substeps, correlation=r)
        assert sol.noise.kind == mf.NON_DEGENERATE
        w = sol.w[0]
        delta = w[:, 0] * w[:, 1] - w[:, 2] * w[:, 3]
        k = delta[0] ** 2 / (1 - delta[0] ** 2) * np.exp(-2 * tau)
        errs.append(np.abs(delta - np.sign(delta[0]) * np.sqrt(k / (1 + k))).max())
        assert np.abs(w[:, 0] - w[:, 1]).max() < 1e-12  # stays balanced
    assert errs[1] < 1e-3 and (errs[1] < errs[0] / 10 or errs[1] < 1e-10), errs

    # two-unit label noise, unbalanced start: c_j(tau) = c_j(0) exp(-tau); products not equalised
    lh, m, r = loss_hat_of(two, ni.label_noise(1.0))
    start = jnp.asarray([1.2, 0.5, 0.3, 0.9])
    errs = []
    for substeps in (1, 2):
        sol = mf.solve_limit(two.loss, lh, m, start, tau_save, n_saves, substeps=substeps, correlation=r)
        assert sol.noise.kind == mf.DEGENERATE and not sol.noise.stochastic
        w = sol.w[0]
        c = np.stack([w[:, 0] ** 2 - w[:, 1] ** 2, w[:, 2] ** 2 - w[:, 3] ** 2], 1)
        errs.append(np.abs(c - c[:1] * np.exp(-tau)[:, None]).max())
    assert errs[1] < 1e-3 and (errs[1] < errs[0] / 10 or errs[1] < 1e-10), errs
    long = mf.solve_limit(two.loss, lh, m, start, 2.0, 6, substeps=8, correlation=r).w[0, -1]
    p1, p2 = long[0] * long[1], long[2] * long[3]
    assert abs(p1 + p2 - 1) < 1e-12
    assert abs(p1 - p2) > 0.2  # balanced (c -> 0) but p1 != p2: label noise does not equalise the products


def test_classification_of_each_noise(hyp, two):
    w = jnp.asarray(hyperbola_point(1.5))
    expect = {
        "label_noise": (mf.DEGENERATE, False),
        "perturbed_gd": (mf.NON_DEGENERATE, False),
        "sgld": (mf.DEGENERATE, True),
        "dropconnect": (mf.DEGENERATE, False),  # Reg = (xy)^2: its gradient is normal on Gamma
    }
    for name, (kind, stochastic) in expect.items():
        inj = ni.make_injection(name, 0.3)
        lh, m, r = loss_hat_of(hyp, inj)
        nc = mf.classify_noise(hyp.loss, lh, m, w, r)
        assert (nc.kind, nc.stochastic) == (kind, stochastic), (name, nc)
        assert nc.time_scale == mf.TIME_SCALES[kind]
    hyp3 = mm.hyperbola(n=3)
    lh, m, r = loss_hat_of(hyp3, ni.minibatch(1, 3))
    assert mf.classify_noise(hyp3.loss, lh, m, w, r).kind == mf.TRIVIAL
    q = jnp.asarray(balanced_two_unit_point(0.3))
    for name, kind in (("dropout", mf.NON_DEGENERATE), ("dropconnect", mf.NON_DEGENERATE), ("label_noise", mf.TRIVIAL)):
        lh, m, r = loss_hat_of(two, ni.make_injection(name, 0.3))
        assert mf.classify_noise(two.loss, lh, m, q, r).kind == kind, name
    # label noise: balanced points are fixed points of its flow (c_j' = -c_j = 0, p_j' = 0), so it is
    # locally trivial there and degenerate at an unbalanced point
    u = np.array([1.3, 0.5, 0.6, (1 - 0.65) / 0.6])
    lh, m, r = loss_hat_of(two, ni.label_noise(1.0))
    assert mf.classify_noise(two.loss, lh, m, jnp.asarray(u), r).kind == mf.DEGENERATE
    # at the fixed point delta = 0 of the Dropout flow P_T grad Reg vanishes: the classification is
    # local, so the point itself is not non-degenerate
    lh, m, r = loss_hat_of(two, ni.dropout(0.3))
    nc = mf.classify_noise(two.loss, lh, m, jnp.asarray(balanced_two_unit_point(0.0)), r)
    assert nc.kind != mf.NON_DEGENERATE and nc.tangent_reg_gradient < 1e-12
