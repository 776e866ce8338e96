"""Single-index targets on Gaussian inputs and two-layer networks, in the Hermite basis.

Setting of Berthier, Montanari & Zhou, "Learning time-scales in two-layers neural networks",
FoCM 2024 (BMZ), Sec. 2: ``x ~ N(0, I_d)``, ``y = phi(<theta*, x>)`` with ``|theta*| = 1``, and
the network ``f(x) = (1/m) sum_i a_i sigma(<u_i, x>)`` with ``|u_i| = 1``.

Conventions
-----------
* ``h_k = He_k / sqrt(k!)`` are the *normalised* probabilists' Hermite polynomials
  (``E h_j(g) h_k(g) = delta_jk`` for ``g ~ N(0, 1)``).
* ``phi`` and ``sigma`` are represented by their coefficient vectors ``phi_k, sigma_k``,
  ``k = 0..K`` (shape ``(K+1,)``). A function (a named one: relu, tanh, erf, ...; or any
  JAX-traceable ``R -> R``) is *projected* on degrees ``0..K`` by quadrature
  (:func:`hermite_projection`): every solver and simulator then works with the same degree-``K``
  polynomial model, so theory and simulation compare the same problem, and the truncation error
  ``||f - sum_{k<=K} c_k h_k||`` is reported (:class:`Projection`), not hidden.
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
from functools import lru_cache
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate, special

from sgdlab.core.functions import FunctionError

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


class Projection(NamedTuple):
    """A function ``f`` projected on the normalised Hermite polynomials of degrees ``0..K``.

    ``coefficients`` ``(K+1,)``: ``c_k = E[f(g) h_k(g)]``, ``g ~ N(0, 1)``; ``norm``: the
    ``L2(gamma)`` norm ``||f|| = (E f(g)^2)^{1/2}``; ``remainder``: the norm of what the truncation
    drops, ``||f - sum_{k<=K} c_k h_k|| = (||f||^2 - sum_{k<=K} c_k^2)^{1/2}`` (Parseval in the
    orthonormal basis ``h_k = He_k / sqrt(k!)``: with the unnormalised ``He_k`` and coefficients
    ``b_k = c_k / sqrt(k!)`` the same sum reads ``||f||^2 - sum_k b_k^2 k!``)."""

    coefficients: np.ndarray
    norm: float
    remainder: float

    @property
    def relative(self) -> float:
        """``remainder / norm`` (0 for the zero function)."""
        return self.remainder / self.norm if self.norm > 0 else 0.0


def _evaluator(fn: Callable) -> Callable[[float], float]:
    """``z -> float(fn(z))``: the numpy built-ins directly, any other (JAX) function jitted once."""
    if fn in NAMED_FUNCTIONS.values():
        return lambda z: float(fn(np.float64(z)))
    jitted = jax.jit(fn)
    return lambda z: float(jitted(np.float64(z)))


def _project(fn: Callable, degree: int, kink: float | None) -> Projection:
    f = _evaluator(fn)

    def integrand(z):  # [f h_0, ..., f h_K, f^2] times the Gaussian density
        fz = f(z)
        h = np.ones(degree + 1)
        if degree >= 1:
            h[1] = z
        for k in range(1, degree):  # the recurrence of hermite_normalised, in numpy (one scalar)
            h[k + 1] = (z * h[k] - math.sqrt(k) * h[k - 1]) / math.sqrt(k + 1)
        return np.append(fz * h, fz * fz) * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)

    pieces = ((-np.inf, np.inf),) if kink is None else ((-np.inf, kink), (kink, np.inf))
    total, err = np.zeros(degree + 2), 0.0
    for lo, hi in pieces:
        val, e = integrate.quad_vec(integrand, lo, hi, epsabs=1e-13, epsrel=1e-12, limit=20_000)
        total, err = total + val, err + e
    if not (np.all(np.isfinite(total)) and np.isfinite(err)) or err > 1e-6 * (1.0 + abs(total[-1])):
        raise FunctionError(f"{getattr(fn, '__name__', type(fn).__name__)}: E f(g)^2 over g ~ N(0, 1) is not finite (or the quadrature does not converge, "
                            f"error {err:.2g}): the Hermite projection needs a function of polynomial growth, finite everywhere")
    coef = total[:-1].copy()
    coef[np.abs(coef) < 1e-13] = 0.0
    coef.setflags(write=False)  # cached: shared by every caller
    norm2 = float(total[-1])
    return Projection(coef, float(np.sqrt(max(norm2, 0.0))), float(np.sqrt(max(norm2 - float(np.sum(coef**2)), 0.0))))


_project_cached = lru_cache(maxsize=256)(_project)


def hermite_projection(fn: str | Callable, degree: int, kink: float | None = None) -> Projection:
    """:class:`Projection` of ``fn`` on degrees ``0..degree``.

    ``fn``: a name of :data:`NAMED_FUNCTIONS` or a function ``R -> R`` (numpy built-in or any
    JAX-traceable elementwise function, evaluated jitted). The integrals ``E[f(g) h_k(g)]`` and
    ``E f(g)^2`` are one vector-valued adaptive Gauss-Kronrod quadrature
    (``scipy.integrate.quad_vec``, absolute tolerance 1e-13, relative 1e-12) on ``(-inf, inf)``, split
    at ``kink`` when given (``0`` for relu / abs): accurate to ~1e-10 for piecewise-smooth ``f`` of
    polynomial growth (a kink elsewhere is found by the adaptive bisection, at more evaluations).
    Cached per ``(fn, degree, kink)``. Raises :class:`~sgdlab.core.functions.FunctionError` if
    ``E f(g)^2`` is not finite.
    """
    if isinstance(fn, str):
        if fn not in NAMED_FUNCTIONS:
            raise ValueError(f"unknown function {fn!r}; available: {sorted(NAMED_FUNCTIONS)}")
        kink = 0.0 if fn in _KINKED else kink
        fn = NAMED_FUNCTIONS[fn]
    try:
        hash(fn)
    except TypeError:  # an unhashable callable object: not cached
        return _project(fn, int(degree), None if kink is None else float(kink))
    return _project_cached(fn, int(degree), None if kink is None else float(kink))


def hermite_coefficients(fn: str | Callable, degree: int, kink: float | None = None) -> np.ndarray:
    """Normalised Hermite coefficients ``c_k = E[f(g) h_k(g)]``, ``k = 0..degree``, ``g ~ N(0,1)``
    (:func:`hermite_projection`; its ``remainder`` is the truncation error)."""
    return hermite_projection(fn, degree, kink).coefficients.copy()


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True)
class SingleIndex:
    """A single-index target and a two-layer network activation, as Hermite coefficients.

    ``phi`` and ``sigma``: tuples of length ``K+1`` (degrees ``0..K``; the shorter one is
    zero-padded). Hashable, so it can be a static argument of jitted functions; also a pytree
    whose leaves are the coefficients, so that a solver can take it as a traced argument and
    compile once per degree ``K`` for every target and activation (the ODE solvers of
    :mod:`sgdlab.two_layer.flow` do).
    """

    phi: tuple[float, ...]
    sigma: tuple[float, ...]

    def __post_init__(self):
        K = max(len(self.phi), len(self.sigma))
        object.__setattr__(self, "phi", tuple(float(x) for x in self.phi) + (0.0,) * (K - len(self.phi)))
        object.__setattr__(self, "sigma", tuple(float(x) for x in self.sigma) + (0.0,) * (K - len(self.sigma)))

    def tree_flatten(self):
        return (self.phi, self.sigma), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)  # no __post_init__: the leaves may be tracers
        object.__setattr__(obj, "phi", tuple(children[0]))
        object.__setattr__(obj, "sigma", tuple(children[1]))
        return obj

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
