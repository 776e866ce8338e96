"""Continuous models of SGD as data, and their drift / diffusion on a finite-sum problem.

Source: Gess, Kassing, Konarovskyi, JMLR 25 (2024) (SMF, their eq. (1.4) in the finite-data form
of ``docs/sde.md``); Li, Tai, E, JMLR 2019 (SME-1, SME-2); Li, Malladi, Arora, NeurIPS 2021 (SVAG).

With ``F = (1/n) sum_i f_i``, batch size ``B`` and learning rate ``eta`` (time ``t = k eta``):

========================  ===========================================  =================================================
model                     drift                                        noise
========================  ===========================================  =================================================
``gf``                    ``-grad F``                                  none
``sme1``                  ``-grad F``                                  ``sqrt(eta/B) Sigma^{1/2}(X) dB``  (B in R^d)
``sme2``                  ``-grad(F + eta/4 |grad F|^2)``              ``sqrt(eta/B) Sigma^{1/2}(X) dB``
``smf``                   ``-grad(F + eta/4 |grad F|^2)``              ``sqrt(eta/(nB)) sum_i (grad F - grad f_i)(X) dbeta_i``
``smf_independent``       as ``smf``                                   as ``smf``, but each copy has its own ``beta``
``smf_expected_gradient`` ``-grad(F + eta/4 E|g_B|^2)`` (the trap)     as ``smf``
========================  ===========================================  =================================================

``Sigma(x) = Cov_theta(grad f(x, theta))``, ``g_B`` is the SGD gradient of a batch of ``B``, so
``E|g_B|^2 = |grad F|^2 + tr Sigma / B``. "Copies" are solutions started from different initial
points: ``shared`` coupling drives all of them by the same Brownian motions (the stochastic flow
``x -> X^x``, which is what SGD fed the same samples is), ``independent`` by independent ones.
``Sigma^{1/2}`` is the symmetric positive semi-definite root (:func:`psd_sqrt`); for SME with shared
coupling, ``B`` is the same ``d``-dimensional Brownian motion for all copies.

Weak orders predicted by the theory (one point / several points fed the same samples):
GF 1/1, SME-1 1/1, SME-2 2/1, SMF 2/2, SMF with independent noise 2/1, the ``E|grad f|^2`` drift 1/1.
SVAG (:class:`SVAG`) is a discrete process: steps ``eta/l`` with ``g = r1 g_B + r2 g_B'``,
``r_{1,2} = (1 +- sqrt(2l - 1))/2``; ``l = 1`` is SGD, ``l -> inf`` is SME-1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp

from sgdlab.sde.problems import FiniteSumProblem

Array = jax.Array

DRIFTS = ("gradient", "modified", "modified_expected")
NOISES = ("none", "sqrt_covariance", "per_sample")
COUPLINGS = ("shared", "independent")


@dataclass(frozen=True)
class SDEModel:
    """A continuous model of SGD, as data.

    Attributes:
        name: short name (``gf``, ``sme1``, ...).
        drift: ``gradient`` (``-grad F``), ``modified`` (``-grad(F + eta/4 |grad F|^2)``) or
            ``modified_expected`` (``-grad(F + eta/4 E|g_B|^2)``, the negative control).
        noise: ``none``, ``sqrt_covariance`` (``sqrt(eta/B) Sigma^{1/2} dB``) or ``per_sample``
            (one Brownian motion per sample, ``sqrt(eta/(nB)) sum_i (grad F - grad f_i) dbeta_i``).
        coupling: ``shared`` (all copies driven by the same Brownian motions) or ``independent``.
        order_one_point, order_multi_point: the weak orders the theory predicts.
        description: one line for tables and docs.
    """

    name: str
    drift: Literal["gradient", "modified", "modified_expected"]
    noise: Literal["none", "sqrt_covariance", "per_sample"]
    coupling: Literal["shared", "independent"] = "shared"
    order_one_point: int = 1
    order_multi_point: int = 1
    description: str = ""

    def __post_init__(self):
        if self.drift not in DRIFTS:
            raise ValueError(f"SDEModel.drift={self.drift!r}; allowed: {', '.join(DRIFTS)}")
        if self.noise not in NOISES:
            raise ValueError(f"SDEModel.noise={self.noise!r}; allowed: {', '.join(NOISES)}")
        if self.coupling not in COUPLINGS:
            raise ValueError(f"SDEModel.coupling={self.coupling!r}; allowed: {', '.join(COUPLINGS)}")

    def expected_order(self, copies: int) -> int:
        """The predicted weak order for a moment observable of ``copies`` starting points."""
        return self.order_one_point if copies <= 1 else self.order_multi_point

    def leading_noise_exact(self, copies: int) -> bool:
        """Whether the noise has SGD's leading-order (``eta C(x, y)``) covariance for ``copies`` points."""
        if self.noise == "none":
            return False
        if copies <= 1:
            return True
        return self.noise == "per_sample" and self.coupling == "shared"


@dataclass(frozen=True)
class SVAG:
    """SVAG (Li, Malladi, Arora 2021): ``l`` steps of ``eta/l`` per SGD step, with the gradient
    ``r1 g_B + r2 g_B'`` of two independent batches, ``r_{1,2} = (1 +- sqrt(2l - 1))/2``.

    Same mean and (per unit time) covariance as SGD; weakly approximates SME-1 as ``l -> inf``
    (weak order 1 in ``1/l``); ``l = 1`` is SGD itself.
    """

    l: int = 4
    order_one_point: int = 1
    order_multi_point: int = 1

    def __post_init__(self):
        if int(self.l) != self.l or self.l < 1:
            raise ValueError(f"SVAG.l={self.l} must be an integer >= 1")

    @property
    def name(self) -> str:
        return "svag"

    @property
    def description(self) -> str:
        return f"SVAG, l = {self.l} (discrete; -> SME-1 as l -> inf)"

    @property
    def weights(self) -> tuple[float, float]:
        """``(r1, r2) = ((1 + sqrt(2l-1))/2, (1 - sqrt(2l-1))/2)``: ``r1 + r2 = 1``, ``r1^2 + r2^2 = l``."""
        s = math.sqrt(2 * self.l - 1)
        return (1 + s) / 2, (1 - s) / 2

    def expected_order(self, copies: int) -> int:
        return self.order_one_point if copies <= 1 else self.order_multi_point

    def leading_noise_exact(self, copies: int) -> bool:
        """SVAG feeds all copies the same batches, like SGD: right leading-order covariance."""
        return True


def expected_order(model: "SDEModel | SVAG", copies: int, fluctuation: bool = False) -> int:
    """The weak order the theory predicts for ``model`` on an observable of ``copies`` points.

    Moments (``E X``, ``E|X|^2``, ``E<X^x, X^y>``, ...): the table of the module docstring.
    Fluctuations (``Var``, ``Cov``, themselves ``O(eta)``): 2 when the model's noise has the right
    leading-order law for them (its drift error then only enters at ``eta^2``), 1 otherwise
    (GF; SME and independent noise for multi-point covariances).
    """
    if fluctuation:
        return 2 if model.leading_noise_exact(copies) else 1
    return model.expected_order(copies)


GF = SDEModel("gf", "gradient", "none", order_one_point=1, order_multi_point=1, description="gradient flow dX = -grad F dt")
SME1 = SDEModel("sme1", "gradient", "sqrt_covariance", order_one_point=1, order_multi_point=1, description="SME-1: -grad F, sqrt(eta) Sigma^1/2 dB")
SME2 = SDEModel(
    "sme2", "modified", "sqrt_covariance", order_one_point=2, order_multi_point=1,
    description="SME-2: -grad(F + eta/4 |grad F|^2), sqrt(eta) Sigma^1/2 dB",
)
SMF = SDEModel(
    "smf", "modified", "per_sample", order_one_point=2, order_multi_point=2,
    description="SMF: -grad(F + eta/4 |grad F|^2), one Brownian motion per sample, shared by all copies",
)
SMF_INDEPENDENT = SDEModel(
    "smf_independent", "modified", "per_sample", coupling="independent", order_one_point=2, order_multi_point=1,
    description="SMF with independent noise per copy (right one-point law, wrong multi-point law)",
)
SMF_EXPECTED_GRADIENT = SDEModel(
    "smf_expected_gradient", "modified_expected", "per_sample", order_one_point=1, order_multi_point=1,
    description="negative control: SMF with -grad(F + eta/4 E|grad f|^2) (the trap)",
)

#: The built-in models by name; ``svag`` is :class:`SVAG` with ``l = 4``.
MODELS: dict[str, SDEModel | SVAG] = {
    m.name: m for m in (GF, SME1, SME2, SMF, SMF_INDEPENDENT, SMF_EXPECTED_GRADIENT, SVAG())
}


def get_model(model: str | SDEModel | SVAG, svag_l: int | None = None) -> SDEModel | SVAG:
    """A model from its name (``svag_l`` sets SVAG's ``l``) or the model itself."""
    if isinstance(model, (SDEModel, SVAG)):
        return model
    if model == "svag" and svag_l is not None:
        return SVAG(int(svag_l))
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; available: {', '.join(MODELS)}")
    return MODELS[model]


# ------------------------------------------------------------------------------------------------
# Drift and diffusion
# ------------------------------------------------------------------------------------------------
class SDE(NamedTuple):
    """An Ito SDE ``dX = drift(X) dt + sigma(X) dW`` for one copy, ``X (d,)``, ``W (m,)``.

    Attributes:
        drift: ``x (d,) -> (d,)``.
        noise: ``(x (d,), w (m,)) -> sigma(x) w (d,)``; linear in ``w``.
        ito_correction: ``x -> sum_j (D sigma_j)(x)[sigma_j(x)] (d,)``, the sum over noise columns
            of each column's derivative along itself (needed by the weak-order-2 scheme).
        noise_dim: ``m``.
        coupling: how several copies share ``W``: ``shared`` or ``independent``.
    """

    drift: Callable[[Array], Array]
    noise: Callable[[Array, Array], Array]
    ito_correction: Callable[[Array], Array]
    noise_dim: int
    coupling: str = "shared"


def psd_sqrt(S: Array) -> Array:
    """The symmetric positive semi-definite square root of a symmetric ``S (d, d)``.

    ``d = 1``: ``sqrt``; ``d = 2``: the closed form ``(S + s I) / sqrt(tr S + 2 s)``,
    ``s = sqrt(det S)``; larger ``d``: 48 coupled Newton--Schulz iterations on ``S / tr S``
    (matrix products only; converges for eigenvalue ratios down to about ``1e-14``). No LAPACK
    call: XLA's CPU ``eigh`` was seen to stall inside the batched, vmapped scheme loops.
    Smooth where ``S`` is positive definite; only Hoelder where it degenerates (SME's known
    weakness), so derivatives there are not meaningful.
    """
    d = S.shape[-1]
    tiny = 1e-300
    if d == 1:
        return jnp.sqrt(jnp.maximum(S, tiny))
    if d == 2:
        det = S[0, 0] * S[1, 1] - S[0, 1] * S[1, 0]
        s = jnp.sqrt(jnp.maximum(det, tiny))
        t = jnp.sqrt(jnp.maximum(S[0, 0] + S[1, 1] + 2 * s, tiny))
        return (S + s * jnp.eye(2, dtype=S.dtype)) / t
    c = jnp.maximum(jnp.trace(S), tiny)
    eye = jnp.eye(d, dtype=S.dtype)

    def body(_, yz):
        Y, Z = yz
        T = 0.5 * (3 * eye - Z @ Y)
        return Y @ T, T @ Z

    Y, _ = jax.lax.fori_loop(0, 48, body, (S / c, eye))
    return jnp.sqrt(c) * Y


def generic_ito_correction(noise: Callable[[Array, Array], Array], noise_dim: int) -> Callable[[Array], Array]:
    """``x -> sum_j D sigma_j(x)[sigma_j(x)]`` by ``noise_dim`` forward-mode derivatives (for small ``m``)."""

    def correction(x):
        def column(e):
            col = noise(x, e)
            return jax.jvp(lambda y: noise(y, e), (x,), (col,))[1]

        return jnp.sum(jax.vmap(column)(jnp.eye(noise_dim, dtype=x.dtype)), axis=0)

    return correction


def drift_potential(problem: FiniteSumProblem, drift: str, eta) -> Callable[[Array], Array]:
    """The potential whose negative gradient is the drift: ``F``, ``F + eta/4 |grad F|^2`` or
    ``F + eta/4 E|g_B|^2 = F + eta/4 ((1 - 1/B)|grad F|^2 + (1/B) mean_i |grad f_i|^2)``."""
    B = problem.batch_size
    if drift == "gradient":
        return problem.full_loss
    if drift == "modified":
        return lambda x: problem.full_loss(x) + 0.25 * eta * jnp.sum(problem.full_grad(x) ** 2)

    def expected(x):
        g = problem.sample_grads(x)
        gbar = jnp.mean(g, axis=0)
        e_sq = (1 - 1 / B) * jnp.sum(gbar**2) + jnp.mean(jnp.sum(g**2, axis=1)) / B
        return jnp.mean(problem.sample_losses(x)) + 0.25 * eta * e_sq

    if drift == "modified_expected":
        return expected
    raise ValueError(f"drift={drift!r}; allowed: {', '.join(DRIFTS)}")


def sde_for(problem: FiniteSumProblem, model: SDEModel, eta) -> SDE:
    """The drift and diffusion of ``model`` on ``problem`` at learning rate ``eta`` (may be traced).

    Costs per evaluation (``n`` samples, dimension ``d``): drift one second-order pass over the
    samples; ``per_sample`` noise one reverse pass (``sum_i w_i grad f_i`` with
    ``w = mean(xi) - xi``) and its Ito correction one Hessian-vector pass
    (``sum_i D sigma_i[sigma_i] = (eta / 2B) grad tr Sigma(x)``, using ``sum_i (grad F - grad f_i) = 0``);
    ``sqrt_covariance`` noise builds ``Sigma (d, d)`` and its eigendecomposition (small ``d`` only).
    """
    B, n = problem.batch_size, problem.n_samples
    potential = drift_potential(problem, model.drift, eta)
    drift = lambda x: -jax.grad(potential)(x)  # noqa: E731

    if model.noise == "none":
        return SDE(drift, lambda x, w: jnp.zeros_like(x), lambda x: jnp.zeros_like(x), 1, model.coupling)

    if model.noise == "per_sample":
        c = jnp.sqrt(eta / (n * B))

        def noise(x, w):
            # sum_i (grad F - grad f_i) w_i = sum_i grad f_i (mean(w) - w_i)
            return c * problem.weighted_grad(x, jnp.mean(w) - w)

        def ito(x):
            # sum_i D sigma_i[sigma_i] = c^2 sum_i (H_F - H_i)(grad F - grad f_i)
            #   = -c^2 (n H_F grad F - grad sum_i |grad f_i|^2 / 2)  (sum_i (grad F - grad f_i) = 0)
            #   = (eta / 2B) grad tr Sigma(x),  tr Sigma = mean_i |grad f_i|^2 - |grad F|^2
            def trace_sigma(y):
                g = problem.sample_grads(y)
                return jnp.mean(jnp.sum(g * g, axis=1)) - jnp.sum(jnp.mean(g, axis=0) ** 2)

            return (0.5 * eta / B) * jax.grad(trace_sigma)(x)

        return SDE(drift, noise, ito, n, model.coupling)

    if model.noise == "sqrt_covariance":
        c = jnp.sqrt(eta / B)

        def noise(x, w):
            return c * (psd_sqrt(problem.gradient_covariance(x)) @ w)

        return SDE(drift, noise, generic_ito_correction(noise, problem.dim), problem.dim, model.coupling)
    raise ValueError(f"noise={model.noise!r}; allowed: {', '.join(NOISES)}")
