"""Single-index targets on Gaussian inputs and two-layer networks, in the Hermite basis.

Setting of Berthier, Montanari & Zhou, "Learning time-scales in two-layers neural networks",
FoCM 2024 (BMZ), Sec. 2: ``x ~ N(0, I_d)``, ``y = phi(<theta*, x>)`` with ``|theta*| = 1``, and
the network ``f(x) = (1/m) sum_i a_i sigma(<u_i, x>)`` with ``|u_i| = 1``.

Conventions
-----------
* ``h_k = He_k / sqrt(k!)`` are the *normalised* probabilists' Hermite polynomials
  (``E h_j(g) h_k(g) = delta_jk`` for ``g ~ N(0, 1)``).
* ``phi`` and ``sigma`` are represented by their coefficient vectors ``phi_k, sigma_k``,
  ``k = 0..K`` (shape ``(K+1,)``). A named function (relu, tanh, erf, ...) is *projected* on
  degrees ``0..K`` by quadrature (:func:`hermite_coefficients`): every solver and simulator then
  works with the same degree-``K`` polynomial model, so theory and simulation compare the same
  problem (the truncation error of the named function is reported, not hidden).
* Mehler's formula: for unit vectors with ``<u, v> = rho``, ``E h_j(<u,x>) h_k(<v,x>) =
  delta_jk rho^k``. Hence (BMZ eq. (2.3)) with ``V(s) = sum_k phi_k sigma_k s^k`` and
  ``U(s) = sum_k sigma_k^2 s^k``::

      R = |phi|^2/2 - (1/m) sum_i a_i V(s_i) + (1/(2 m^2)) sum_ij a_i a_j U(G_ij),

  ``s_i = <u_i, theta*>``, ``G_ij = <u_i, u_j>``. The risk decouples over degrees:
  ``R = sum_k R_k`` with ``R_k = phi_k^2/2 - phi_k sigma_k M_k + sigma_k^2 Q_k / 2``,
  ``M_k = (1/m) sum_i a_i s_i^k``, ``Q_k = (1/m^2) sum_ij a_i a_j G_ij^k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate, special

#: Named functions ``R -> R`` whose Hermite coefficients are computed by quadrature.
#: ``erf`` is the Saad-Solla activation ``erf(z / sqrt(2))``.
NAMED_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "erf": lambda z: special.erf(z / np.sqrt(2.0)),
    "sigmoid": lambda z: special.expit(z),
    "abs": np.abs,
    "he2": lambda z: (z**2 - 1) / np.sqrt(2.0),
    "he3": lambda z: (z**3 - 3 * z) / np.sqrt(6.0),
}
#: Named functions with a kink at 0 (quadrature is split there).
_KINKED = {"relu", "abs"}


def hermite_normalised(z: jax.Array, degree: int) -> jax.Array:
    """``h_0(z), ..., h_degree(z)`` stacked on a new last axis: shape ``z.shape + (degree+1,)``.

    Three-term recurrence ``He_{k+1} = z He_k - k He_{k-1}`` written for ``h_k = He_k/sqrt(k!)``:
    ``h_{k+1} = (z h_k - sqrt(k) h_{k-1}) / sqrt(k+1)`` (stable, no factorials).
    """
    z = jnp.asarray(z)
    hs = [jnp.ones_like(z)]
    if degree >= 1:
        hs.append(z)
    for k in range(1, degree):
        hs.append((z * hs[k] - math.sqrt(k) * hs[k - 1]) / math.sqrt(k + 1))
    return jnp.stack(hs, axis=-1)


def hermite_series(coef: jax.Array, z: jax.Array) -> jax.Array:
    """``sum_k coef_k h_k(z)``; ``coef`` shape ``(K+1,)``, result shape ``z.shape``."""
    coef = jnp.asarray(coef)
    return hermite_normalised(z, coef.shape[0] - 1) @ coef


def hermite_series_derivative(coef: jax.Array, z: jax.Array) -> jax.Array:
    """``d/dz sum_k coef_k h_k(z) = sum_k coef_k sqrt(k) h_{k-1}(z)``; shape ``z.shape``."""
    coef = jnp.asarray(coef)
    K = coef.shape[0] - 1
    if K == 0:
        return jnp.zeros_like(jnp.asarray(z))
    return hermite_normalised(z, K - 1) @ (coef[1:] * jnp.sqrt(jnp.arange(1, K + 1.0)))


def hermite_coefficients(fn: str | Callable, degree: int, kink: float | None = None) -> np.ndarray:
    """Normalised Hermite coefficients ``c_k = E[f(g) h_k(g)]``, ``k = 0..degree``, ``g ~ N(0,1)``.

    ``fn`` is a name of :data:`NAMED_FUNCTIONS` or a vectorised numpy function. Adaptive
    quadrature (``scipy.integrate.quad``) on ``(-inf, kink)`` and ``(kink, inf)`` (``kink = 0``
    for relu/abs), absolute tolerance 1e-12: accurate to ~1e-10 for piecewise-smooth ``f`` of
    polynomial growth.
    """
    if isinstance(fn, str):
        if fn not in NAMED_FUNCTIONS:
            raise ValueError(f"unknown function {fn!r}; available: {sorted(NAMED_FUNCTIONS)}")
        kink = 0.0 if fn in _KINKED else kink
        fn = NAMED_FUNCTIONS[fn]
    out = np.zeros(degree + 1)
    gauss = lambda z: np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)  # noqa: E731
    for k in range(degree + 1):
        def integrand(z, k=k):
            return float(fn(np.asarray(z)) * np.asarray(hermite_normalised(np.asarray(z), k))[k] * gauss(z))
        if kink is None:
            val, _ = integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-13, epsrel=1e-12, limit=200)
        else:
            v1, _ = integrate.quad(integrand, -np.inf, kink, epsabs=1e-13, epsrel=1e-12, limit=200)
            v2, _ = integrate.quad(integrand, kink, np.inf, epsabs=1e-13, epsrel=1e-12, limit=200)
            val = v1 + v2
        out[k] = val
    out[np.abs(out) < 1e-13] = 0.0
    return out


def function_second_moment(fn: str | Callable) -> float:
    """``E f(g)^2`` (= ``sum_k c_k^2`` over all degrees): compared with the truncated sum it
    gives the truncation error of a named function projected on degrees ``0..K``."""
    if isinstance(fn, str):
        kink = 0.0 if fn in _KINKED else None
        fn = NAMED_FUNCTIONS[fn]
    else:
        kink = None
    integrand = lambda z: float(fn(np.asarray(z)) ** 2 * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi))  # noqa: E731
    if kink is None:
        return integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-13, limit=200)[0]
    return sum(integrate.quad(integrand, lo, hi, epsabs=1e-13, limit=200)[0] for lo, hi in ((-np.inf, 0.0), (0.0, np.inf)))


@dataclass(frozen=True)
class SingleIndex:
    """A single-index target and a two-layer network activation, as Hermite coefficients.

    ``phi`` and ``sigma``: tuples of length ``K+1`` (degrees ``0..K``; the shorter one is
    zero-padded). Hashable, so it can be a static argument of jitted functions.
    """

    phi: tuple[float, ...]
    sigma: tuple[float, ...]

    def __post_init__(self):
        K = max(len(self.phi), len(self.sigma))
        object.__setattr__(self, "phi", tuple(float(x) for x in self.phi) + (0.0,) * (K - len(self.phi)))
        object.__setattr__(self, "sigma", tuple(float(x) for x in self.sigma) + (0.0,) * (K - len(self.sigma)))

    @property
    def degree(self) -> int:
        return len(self.phi) - 1

    @property
    def phi_arr(self) -> jax.Array:
        return jnp.asarray(self.phi, dtype=jnp.float64)

    @property
    def sigma_arr(self) -> jax.Array:
        return jnp.asarray(self.sigma, dtype=jnp.float64)

    def learnable(self) -> np.ndarray:
        """Boolean ``(K+1,)``: degree ``k`` can be learned iff ``sigma_k != 0`` (BMZ Sec. 3)."""
        return np.asarray(self.sigma) != 0

    def plateau_levels(self) -> np.ndarray:
        """Predicted plateau heights ``(K+2,)``: entry ``l`` is the risk once degrees ``< l`` are
        learned, ``(1/2) sum_{k >= l, learnable} phi_k^2 + (1/2) sum_{k unlearnable} phi_k^2``
        (BMZ Thm. 1 / Sec. 3); entry ``K+1`` is the final (irreducible) risk."""
        phi2 = np.asarray(self.phi) ** 2
        unl = ~self.learnable()
        return np.array([0.5 * (phi2[l:][~unl[l:]].sum() + phi2[unl].sum()) for l in range(self.degree + 2)])


def V_poly(problem: SingleIndex, s: jax.Array) -> jax.Array:
    """``V(s) = sum_k phi_k sigma_k s^k`` (elementwise)."""
    return jnp.polyval((problem.phi_arr * problem.sigma_arr)[::-1], s)


def U_poly(problem: SingleIndex, s: jax.Array) -> jax.Array:
    """``U(s) = sum_k sigma_k^2 s^k`` (elementwise)."""
    return jnp.polyval((problem.sigma_arr**2)[::-1], s)


def powers(s: jax.Array, degree: int) -> jax.Array:
    """``s^0, ..., s^degree`` on a new last axis."""
    return s[..., None] ** jnp.arange(degree + 1)


def _mehler(problem: SingleIndex, w: jax.Array, s: jax.Array, G: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(R_k, F_k)`` for neurons with per-degree output weights ``w`` ``(m, K+1)`` (``a_i`` times
    the neuron's Hermite coefficients) on unit vectors with overlaps ``s`` ``(m,)``, ``G`` ``(m, m)``:
    ``F_k = (1/m) sum_i w_ik s_i^k``, ``Q_k = (1/m^2) sum_ij w_ik w_jk G_ij^k``,
    ``R_k = phi_k^2/2 - phi_k F_k + Q_k/2``."""
    m, K = w.shape[0], problem.degree
    F = jnp.sum(w * powers(s, K), axis=0) / m
    Q = jnp.einsum("ik,jk,ijk->k", w, w, powers(G, K)) / m**2
    phi = problem.phi_arr
    return 0.5 * phi**2 - phi * F + 0.5 * Q, F


def mehler_risk_per_degree(problem: SingleIndex, a: jax.Array, s: jax.Array, G: jax.Array) -> jax.Array:
    """Exact population risk per Hermite degree, shape ``(K+1,)`` (Mehler formula, BMZ eq. (2.3)).

    ``a``: ``(m,)`` second layer; ``s``: ``(m,)`` overlaps ``<u_i, theta*>``; ``G``: ``(m, m)``
    Gram matrix ``<u_i, u_j>`` (unit diagonal). ``R_k = phi_k^2/2 - phi_k sigma_k M_k +
    sigma_k^2 Q_k/2``.
    """
    return _mehler(problem, a[:, None] * problem.sigma_arr, s, G)[0]


def network_output(problem: SingleIndex, a: jax.Array, u: jax.Array, x: jax.Array) -> jax.Array:
    """``f(x) = (1/m) sum_i a_i sigma(<u_i, x>)``; ``a`` ``(m,)``, ``u`` ``(m, d)``, ``x`` ``(n, d)``
    -> ``(n,)``."""
    return hermite_series(problem.sigma_arr, x @ u.T) @ a / a.shape[0]


def target(problem: SingleIndex, x: jax.Array) -> jax.Array:
    """``y = phi(x_1)``: ``theta* = e_1`` (rotation invariance); ``x`` ``(n, d)`` -> ``(n,)``."""
    return hermite_series(problem.phi_arr, x[:, 0])


def sampled_risk(problem: SingleIndex, a: jax.Array, u: jax.Array, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Monte-Carlo estimate of ``R = E (y - f)^2 / 2`` on ``n`` fresh inputs: ``(mean, standard error)``."""
    x = jax.random.normal(key, (n, u.shape[1]))
    loss = 0.5 * (target(problem, x) - network_output(problem, a, u, x)) ** 2
    return loss.mean(), loss.std() / jnp.sqrt(n)


def online_sgd_grad(problem: SingleIndex, a: jax.Array, u: jax.Array, x: jax.Array, y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Mean-field-scaled stochastic gradients ``(m dL/da, m dL/du)`` of the batch loss
    ``L = mean_n (y_n - f(x_n))^2 / 2``; shapes ``(m,)``, ``(m, d)``. ``y`` ``(n,)``: the labels
    (default ``phi(x_1)``, fresh samples; a finite data set passes its own). Their expectation over
    ``x`` is ``(m dR/da, m grad_u R)`` of the population flow (BMZ eq. (2.4))."""
    h = x @ u.T  # (n, m)
    act = hermite_series(problem.sigma_arr, h)
    y = target(problem, x) if y is None else y
    err = y - act @ a / a.shape[0]  # (n,)
    n = x.shape[0]
    ga = -(err @ act) / n
    gu = -(a[:, None] * ((err[:, None] * hermite_series_derivative(problem.sigma_arr, h)).T @ x)) / n
    return ga, gu


def hermite_rescale_matrix(c: jax.Array, degree: int) -> jax.Array:
    """``T(c)`` with ``h_n(c z) = sum_j T(c)_{nj} h_j(z)``: shape ``c.shape + (K+1, K+1)``.

    Hermite multiplication (scaling) theorem for the normalised polynomials, ``k = (n - j)/2``::

        T_{nj} = c^j (c^2 - 1)^k sqrt(n!) / (k! 2^k sqrt(j!))   (n - j even, j <= n; else 0).

    So a neuron with a non-unit first-layer row ``u = c u_hat`` has ``sigma(<u, x>) = sum_j
    sigma~_j h_j(<u_hat, x>)`` with ``sigma~ = T(c)^T sigma`` (:func:`rescaled_coefficients`), and
    Mehler's formula applies to the unit vectors ``u_hat``. ``T(1) = I``.
    """
    c = jnp.asarray(c)
    rows = []
    for n in range(degree + 1):
        row = []
        for j in range(degree + 1):
            if j > n or (n - j) % 2:
                row.append(jnp.zeros_like(c))
            else:
                k = (n - j) // 2
                coef = math.sqrt(math.factorial(n)) / (math.factorial(k) * 2**k * math.sqrt(math.factorial(j)))
                row.append(coef * c**j * (c * c - 1.0) ** k)
        rows.append(jnp.stack(row, axis=-1))
    return jnp.stack(rows, axis=-2)


def rescaled_coefficients(problem: SingleIndex, norms: jax.Array) -> jax.Array:
    """Per-neuron Hermite coefficients of ``z -> sigma(|u_i| z)``: ``norms`` ``(m,)`` -> ``(m, K+1)``
    (``sigma~_i = T(|u_i|)^T sigma``, :func:`hermite_rescale_matrix`)."""
    T = hermite_rescale_matrix(norms, problem.degree)  # (m, K+1, K+1)
    return jnp.einsum("mnj,n->mj", T, problem.sigma_arr)


def mehler_risk_per_degree_general(problem: SingleIndex, a: jax.Array, u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact population risk per Hermite degree for first-layer rows of *any* norm, and the
    target-direction projections ``F_k = E[f(x) h_k(<theta*, x>)]``; ``theta* = e_1``.

    ``a`` ``(m,)``, ``u`` ``(m, d)`` -> ``(risk (K+1,), F (K+1,))``. With ``u_i = c_i u_hat_i`` and
    ``sigma~_i`` the rescaled coefficients, ``f = (1/m) sum_i a_i sum_k sigma~_ik h_k(<u_hat_i, x>)``
    and Mehler gives ``R_k = phi_k^2/2 - phi_k F_k + Q~_k/2`` with ``F_k = (1/m) sum_i a_i sigma~_ik
    s_hat_i^k`` and ``Q~_k = (1/m^2) sum_ij a_i a_j sigma~_ik sigma~_jk G_hat_ij^k`` (``s_hat``,
    ``G_hat``: overlaps of the unit vectors). On the sphere this is :func:`mehler_risk_per_degree`
    with ``F_k = sigma_k M_k``. Exact for the degree-``K`` polynomial ``sigma`` (a rescaled
    polynomial has no component above degree ``K``)."""
    c = jnp.linalg.norm(u, axis=1)
    uh = u / c[:, None]
    return _mehler(problem, a[:, None] * rescaled_coefficients(problem, c), uh[:, 0], uh @ uh.T)
