"""Models whose zero-loss set is a manifold: the toy losses of Shalova et al. and two small networks.

Source: ``docs/manifold.md``; Shalova, Schlichting, Peletier, "Singular-limit
analysis of gradient descent with noise injection", arXiv 2404.12293 (2024), section 5 (the
hyperbola and the two-unit network are their examples); Li, Wang, Arora, "What happens after SGD
reaches zero loss?", ICLR 2022 (diagonal linear networks, label noise -> sparsity).

Conventions (every model):

- weights are one flat vector ``w`` of shape ``(p,)``;
- a model is a JAX function ``apply(w, x, unit_scale) -> f`` with ``x`` of shape ``(n, d_in)``,
  ``unit_scale`` of shape ``(u,)`` (one multiplier per hidden unit, all ones without Dropout; ``u``
  may be 0) and outputs ``f`` of shape ``(n,)``;
- the loss is the mean square error ``L(w) = (1/2n) sum_i (f_i(w) - y_i)^2`` (Shalova et al., section 5), so the
  zero-loss set is ``Gamma = {f_i(w) = y_i for all i}``; on ``Gamma`` the Hessian is the
  Gauss-Newton matrix ``H = (1/n) J^T J`` with ``J = d f / d w`` of shape ``(n, p)``;
- ``observables`` maps names to scalar functions of ``w`` (the coordinates the closed forms use).

This module knows data, losses and coordinates; nothing of noise or algorithms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.core.inputs import device_input

Array = jax.Array
ApplyFn = Callable[[Array, Array, Array], Array]

MODEL_NAMES = ("hyperbola", "two_unit", "diagonal", "tanh")


@dataclass(frozen=True, eq=False)
class ManifoldModel:
    """A model ``apply(w, x, unit_scale)``, its data ``(x, y)`` and a default initial point.

    Shapes: ``x (n, d_in)``, ``y (n,)``, ``w0 (p,)``; ``n_units`` hidden units take a Dropout
    multiplier (0: the model has no hidden units). ``observables[name](w)`` is a scalar;
    ``descriptions[name]`` its long name.
    """

    name: str
    apply: ApplyFn
    x: Array
    y: Array
    w0: Array
    n_units: int
    observables: Mapping[str, Callable[[Array], Array]] = field(default_factory=dict)
    descriptions: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def n_params(self) -> int:
        return int(self.w0.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.y.shape[0])

    def outputs(self, w: Array, unit_scale: Array | None = None) -> Array:
        """Model outputs ``f(w)`` of shape ``(n,)``."""
        if unit_scale is None:
            unit_scale = jnp.ones((self.n_units,), w.dtype)
        return self.apply(w, self.x, unit_scale)

    def residuals(self, w: Array) -> Array:
        """``f_i(w) - y_i``, shape ``(n,)``."""
        return self.outputs(w) - self.y

    def loss(self, w: Array) -> Array:
        """``L(w) = (1/2n) sum_i (f_i(w) - y_i)^2`` (scalar)."""
        r = self.residuals(w)
        return 0.5 * jnp.mean(r**2)

    def observe(self, w: Array) -> dict[str, Array]:
        """All observables at ``w`` plus ``loss``: a dict of scalars."""
        out = {k: fn(w) for k, fn in self.observables.items()}
        out["loss"] = self.loss(w)
        return out

    def gauss_newton_trace(self, w: Array) -> Array:
        """``(1/n) sum_i |grad f_i(w)|^2``: equals ``tr Hessian L`` on the zero-loss set."""
        jac = jax.jacfwd(self.outputs)(w)
        return jnp.sum(jac**2) / self.n_samples


def _as_init(init, default, p: int, name: str) -> Array:
    w0 = device_input(np.asarray(default if init is None else init, dtype=np.float64))
    if w0.shape != (p,):
        raise ValueError(f"init for model {name!r} must have {p} entries (got shape {tuple(w0.shape)})")
    return w0


# ---------------------------------------------------------------------------------------------
# hyperbola  L = (xy - 1)^2 / 2
# ---------------------------------------------------------------------------------------------


def hyperbola_inputs(n: int) -> np.ndarray:
    """The ``n`` scalar inputs of the hyperbola data: equally spaced in ``[1, 2]``, rescaled to
    mean square 1 (so that ``L`` is exactly ``(xy - 1)^2 / 2``); ``n = 1`` gives ``[1]``."""
    s = np.linspace(1.0, 2.0, n) if n > 1 else np.ones(1)
    return s / np.sqrt(np.mean(s**2))


def hyperbola(n: int = 1, init=None) -> ManifoldModel:
    """The hyperbola ``L(x, y) = (xy - 1)^2 / 2`` (Shalova et al. 2024, section 5.1).

    Weights ``w = (x, y)``; data ``s_i`` (``n`` inputs of mean square 1, :func:`hyperbola_inputs`)
    with labels ``y_i = s_i`` and outputs ``f_i = s_i x y``, so that
    ``(1/2n) sum_i (s_i x y - s_i)^2 = (xy - 1)^2 / 2``. ``n > 1`` only matters for minibatch SGD
    and label noise (whose limit then runs ``n`` times slower, ``C0 exp(-tau / n)``).
    Gamma is ``{xy = 1}``; gradient flow conserves ``C = x^2 - y^2`` (the coordinate along Gamma).
    No hidden units (Dropout does not apply). Default start ``(2.0, 0.6)``, off Gamma.
    """
    s = hyperbola_inputs(n)

    def apply(w, x, unit_scale):
        del unit_scale
        return x[:, 0] * w[0] * w[1]

    return ManifoldModel(
        name="hyperbola",
        apply=apply,
        x=device_input(s[:, None]),
        y=device_input(s),
        w0=_as_init(init, [2.0, 0.6], 2, "hyperbola"),
        n_units=0,
        observables={"C": lambda w: w[0] ** 2 - w[1] ** 2, "xy": lambda w: w[0] * w[1]},
        descriptions={"C": "C = x^2 - y^2", "xy": "product xy", "loss": "loss (xy - 1)^2 / 2"},
        description="hyperbola (xy - 1)^2 / 2",
    )


# ---------------------------------------------------------------------------------------------
# two-unit linear network  L = (a1 b1 + a2 b2 - 1)^2 / 2
# ---------------------------------------------------------------------------------------------


def two_unit_network(init=None) -> ManifoldModel:
    """Two-unit linear network ``f = a1 b1 + a2 b2`` on the one sample ``(x, y) = (1, 1)``
    (Shalova et al. 2024, section 5.2): ``L = (a1 b1 + a2 b2 - 1)^2 / 2``.

    Weights ``w = (a1, b1, a2, b2)``; hidden unit ``j`` computes ``h_j = b_j x`` and the output is
    ``sum_j a_j h_j`` (Dropout multiplies ``h_j``). Observables: products ``p_j = a_j b_j``,
    ``delta = p1 - p2``, imbalances ``c_j = a_j^2 - b_j^2`` (conserved by gradient flow).
    Default start: balanced (``a_j = b_j``) with ``p = (0.65, 0.25)``, off Gamma.
    """

    def apply(w, x, unit_scale):
        a, b = w[0::2], w[1::2]
        return (x[:, 0:1] * (b * unit_scale)[None, :]) @ a

    default = np.sqrt([0.65, 0.65, 0.25, 0.25])
    return ManifoldModel(
        name="two_unit",
        apply=apply,
        x=device_input(np.ones((1, 1))),
        y=device_input(np.ones((1,))),
        w0=_as_init(init, default, 4, "two_unit"),
        n_units=2,
        observables={
            "delta": lambda w: w[0] * w[1] - w[2] * w[3],
            "p1": lambda w: w[0] * w[1],
            "p2": lambda w: w[2] * w[3],
            "c1": lambda w: w[0] ** 2 - w[1] ** 2,
            "c2": lambda w: w[2] ** 2 - w[3] ** 2,
        },
        descriptions={
            "delta": "delta = p1 - p2 (p_j = a_j b_j)",
            "p1": "p1 = a1 b1",
            "p2": "p2 = a2 b2",
            "c1": "c1 = a1^2 - b1^2",
            "c2": "c2 = a2^2 - b2^2",
            "loss": "loss (a1 b1 + a2 b2 - 1)^2 / 2",
        },
        description="two-unit linear network (a1 b1 + a2 b2 - 1)^2 / 2",
    )


# ---------------------------------------------------------------------------------------------
# diagonal linear network on sparse regression
# ---------------------------------------------------------------------------------------------


def sparse_regression_data(d: int, n: int, sparsity: int, data_seed: int):
    """``(X, y, beta_star)``: ``X`` i.i.d. N(0, 1) of shape ``(n, d)``, ``beta_star`` with
    ``sparsity`` entries equal to 1 (the first ones) and ``y = X beta_star``. NumPy, deterministic
    in ``data_seed``."""
    rng = np.random.default_rng(data_seed)
    x = rng.standard_normal((n, d))
    beta = np.zeros(d)
    beta[:sparsity] = 1.0
    return x, x @ beta, beta


def diagonal_network(d: int = 12, n: int = 6, sparsity: int = 2, data_seed: int = 0, init_scale: float = 1.0, init=None) -> ManifoldModel:
    """Diagonal linear network ``f(x) = sum_l u_l v_l x_l`` on sparse regression (``n < d``).

    Weights ``w = (u, v)`` of shape ``(2d,)``; the regression vector is ``beta = u * v``; hidden
    unit ``l`` is ``h_l = v_l x_l`` (Dropout multiplies it). Data from
    :func:`sparse_regression_data`. With ``m_l = (1/n) sum_i x_il^2``:

    - label noise regularises ``tr H = sum_l m_l (u_l^2 + v_l^2)``, i.e. (balanced weights) the
      weighted l1 norm ``2 sum_l m_l |beta_l|``: it drives towards sparse solutions;
    - Dropout regularises ``Reg = (1/2) sum_l m_l beta_l^2``: a weighted ridge.

    Default start ``u = init_scale, v = 0``: ``beta = 0`` (off Gamma) with imbalances
    ``c_l = u_l^2 - v_l^2 = init_scale^2``, which gradient flow conserves, so the fast phase ends at
    a dense interpolator (the kernel regime for ``init_scale`` of order 1); label noise then decays
    ``c_l`` like ``exp(-m_l tau / n)`` and moves ``beta`` towards the sparse minimiser of the
    weighted l1 norm. (A balanced start ``u = v`` keeps ``beta >= 0`` and reaches the sparse
    solution already in the fast phase, where Gamma is singular: ``u_l = v_l = 0``.)
    Observables: ``weighted_l1 = sum m_l |beta_l|``, ``weighted_l2 = sum m_l beta_l^2``,
    ``off_support_l1 = sum_{beta*_l = 0} |beta_l|``, ``recovery_error = |beta - beta*|`` and
    ``imbalance = mean_l (u_l^2 - v_l^2)``.
    """
    if not 1 <= n < d:
        raise ValueError(f"diagonal network needs 1 <= n < d (got n={n}, d={d})")
    if not 0 <= sparsity <= d:
        raise ValueError(f"sparsity must be in [0, d={d}] (got {sparsity})")
    x, y, beta_star = sparse_regression_data(d, n, sparsity, data_seed)
    m = device_input(np.mean(x**2, axis=0))
    off = device_input(beta_star == 0)
    beta_star = device_input(beta_star)

    def apply(w, xx, unit_scale):
        u, v = w[:d], w[d:]
        return xx @ (u * v * unit_scale)

    def beta(w):
        return w[:d] * w[d:]

    return ManifoldModel(
        name="diagonal",
        apply=apply,
        x=device_input(x),
        y=device_input(y),
        w0=_as_init(init, np.concatenate([np.full(d, init_scale), np.zeros(d)]), 2 * d, "diagonal"),
        n_units=d,
        observables={
            "weighted_l1": lambda w: jnp.sum(m * jnp.abs(beta(w))),
            "weighted_l2": lambda w: jnp.sum(m * beta(w) ** 2),
            "off_support_l1": lambda w: jnp.sum(jnp.where(off, jnp.abs(beta(w)), 0.0)),
            "recovery_error": lambda w: jnp.sqrt(jnp.sum((beta(w) - beta_star) ** 2)),
            "imbalance": lambda w: jnp.mean(w[:d] ** 2 - w[d:] ** 2),
        },
        descriptions={
            "weighted_l1": "weighted l1 sum_l m_l |beta_l|",
            "weighted_l2": "weighted ridge sum_l m_l beta_l^2",
            "off_support_l1": "l1 norm of beta off the support of beta*",
            "recovery_error": "|beta - beta*|",
            "imbalance": "mean_l (u_l^2 - v_l^2)",
            "loss": "training loss",
        },
        description=f"diagonal linear network, d={d}, n={n}, {sparsity}-sparse target",
    )


# ---------------------------------------------------------------------------------------------
# small two-layer tanh network
# ---------------------------------------------------------------------------------------------


def tanh_network(width: int = 3, input_dim: int = 4, n: int = 4, data_seed: int = 0, init=None) -> ManifoldModel:
    """Two-layer network ``f(x) = sum_j a_j tanh(b_j . x)`` with fewer data than parameters.

    Weights ``w = (a (width,), B (width, input_dim) row-major)``, ``p = width (input_dim + 1)``.
    Data: ``n <= input_dim`` orthonormal inputs (the first rows of a random orthogonal matrix, so
    that the normal Hessian on Gamma is well conditioned and the fast phase is fast) and labels
    from a one-unit teacher ``y_i = tanh(2 x_i . v)``, ``v`` a random unit vector. Dropout
    multiplies the hidden activations. Default start: ``a_j ~ N(0, 1)``, ``B_jk ~ N(0, 1)``
    (from ``data_seed``). Observables: ``trace_hessian`` (``(1/n) sum_i |grad f_i|^2 = tr H`` on
    Gamma: the label-noise regulariser up to ``1/(4n)``) and ``weight_norm2 = |w|^2``.
    """
    p = width * (input_dim + 1)
    if not 1 <= n <= input_dim:
        raise ValueError(f"tanh network needs 1 <= n <= input_dim = {input_dim} (orthonormal inputs; got n={n})")
    rng = np.random.default_rng(data_seed)
    q, _ = np.linalg.qr(rng.standard_normal((input_dim, input_dim)))
    x = q[:n]
    v = rng.standard_normal(input_dim)
    y = np.tanh(2.0 * x @ (v / np.linalg.norm(v)))
    default = rng.standard_normal(p)

    def apply(w, xx, unit_scale):
        a, b = w[:width], w[width:].reshape(width, input_dim)
        return jnp.tanh(xx @ b.T) @ (a * unit_scale)

    model = ManifoldModel(
        name="tanh",
        apply=apply,
        x=device_input(x),
        y=device_input(y),
        w0=_as_init(init, default, p, "tanh"),
        n_units=width,
        description=f"two-layer tanh network, width {width}, input dim {input_dim}, n={n} < p={p}",
    )
    object.__setattr__(model, "observables", {"trace_hessian": model.gauss_newton_trace, "weight_norm2": lambda w: jnp.sum(w**2)})
    object.__setattr__(
        model,
        "descriptions",
        {"trace_hessian": "tr H = (1/n) sum_i |grad f_i|^2", "weight_norm2": "|w|^2", "loss": "training loss"},
    )
    return model


def make_model(name: str, **kwargs) -> ManifoldModel:
    """The model ``name`` (one of :data:`MODEL_NAMES`) built with ``kwargs``."""
    builders = {"hyperbola": hyperbola, "two_unit": two_unit_network, "diagonal": diagonal_network, "tanh": tanh_network}
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODEL_NAMES)}")
    return builders[name](**kwargs)
