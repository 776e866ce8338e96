"""Gaussian-mixture classification: data, model output, losses and order parameters.

Source: Mignacco, Krzakala, Urbani, Zdeborova, "Dynamical mean-field theory for stochastic
gradient descent in Gaussian mixture classification", NeurIPS 2020 (arXiv 2006.06098); sgdlab
documentation ``docs/dmft.md``.

Data (``n = round(alpha d)`` samples in dimension ``d``)::

    x_mu = c_mu v / sqrt(d) + sqrt(Delta) z_mu,      z_mu ~ N(0, I_d),  v_i ~ N(0, 1) i.i.d.

- two clusters: ``c in {+1, -1}``, ``P(c = +1) = rho``, label ``y = c``;
- three clusters (XOR-like): ``c in {-1, 0, +1}``, ``P(c = +-1) = rho / 2`` each,
  ``P(c = 0) = 1 - rho``, label ``y = 2 c^2 - 1`` (outer clusters +1, centre -1).

Model: pre-activation ``h = w . x / sqrt(d)``, output ``z = phi(h)`` and decision ``sign(z)``.

- two clusters: ``phi(h) = h`` (a linear classifier without bias);
- three clusters: the *even classifier* ``phi(h) = h^2 - theta`` (``theta`` = ``threshold``,
  default 1): it predicts the outer label when ``|h| > sqrt(theta)``. With ``theta = 1`` the
  square loss asks for ``|h| = sqrt(2)`` on the outer clusters and ``h = 0`` on the centre.

The loss of a sample is ``loss(y, phi(h))``; the simulators and the DMFT only ever need it as a
function of ``(y, h)`` (see :func:`sample_loss`).

Order parameters (spec): ``m = w . v / d`` and ``q = C(t, t) = w . w / d``. A fresh sample has
``h = c m + sqrt(Delta q) xi`` with ``xi ~ N(0, 1)`` exactly (whatever ``|v|``), which gives the
test error and test loss as one-dimensional Gaussian averages of ``(m, q)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erfc

from sgdlab.dmft import losses


@dataclass(frozen=True)
class GaussianMixture:
    """Parameters of the Gaussian-mixture problem (hashable, usable as a static jit argument).

    ``clusters`` and ``loss`` fix the code path; the float fields may also hold traced JAX
    numbers (the simulator rebuilds the problem from traced values to vmap over parameters).

    ``alpha = n / d``; ``delta`` is the cluster variance Delta; ``ridge`` is lambda in the cost
    ``H(w) = sum_mu loss(y_mu, phi(h_mu)) + (lambda / 2) |w|^2``; the initial weights are
    ``w(0) = m0 v + sigma0 N(0, I_d)``.
    """

    clusters: int = 2
    alpha: float = 2.0
    delta: float = 0.5
    rho: float = 0.5
    loss: str = "square"
    kappa: float = 0.0
    threshold: float = 1.0
    ridge: float = 0.1
    m0: float = 0.0
    sigma0: float = 1.0

    def n_samples(self, d: int) -> int:
        """Number of training samples ``n = round(alpha d)`` (at least 1)."""
        return max(1, int(round(self.alpha * d)))

    def cluster_probabilities(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(c values, probabilities)`` of the cluster index."""
        if self.clusters == 2:
            return (1.0, -1.0), (self.rho, 1.0 - self.rho)
        return (1.0, -1.0, 0.0), (self.rho / 2, self.rho / 2, 1.0 - self.rho)


def standard_normal(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """i.i.d. N(0, 1) entries drawn in float32 and cast to ``dtype``.

    Drawing in one precision makes a float64 run see exactly the float32 run's random numbers
    (rounded up), so the two precisions can be compared trajectory by trajectory.
    """
    return jax.random.normal(key, shape, jnp.float32).astype(dtype)


class Dataset(NamedTuple):
    """One training set. Shapes: ``x (n, d)``, ``c (n,)``, ``y (n,)``, ``v (d,)``."""

    x: jax.Array
    c: jax.Array
    y: jax.Array
    v: jax.Array


def sample_clusters(key: jax.Array, problem: GaussianMixture, shape, dtype=jnp.float32) -> jax.Array:
    """Cluster indices ``c`` of the given shape, drawn with the problem's probabilities."""
    u = jax.random.uniform(key, shape)
    if problem.clusters == 2:
        c = jnp.where(u < problem.rho, 1.0, -1.0)
    else:
        c = jnp.where(u < problem.rho / 2, 1.0, jnp.where(u < problem.rho, -1.0, 0.0))
    return c.astype(dtype)


def labels(problem: GaussianMixture, c: jax.Array) -> jax.Array:
    """Labels of clusters ``c``: ``y = c`` (two clusters) or ``y = 2 c^2 - 1`` (three)."""
    return c if problem.clusters == 2 else 2.0 * c**2 - 1.0


#: Target number of entries of one row block of the data matrix (a few hundred KiB per
#: temporary array: the block's counters, random bits and Gaussians stay in cache).
BLOCK_ENTRIES = 2**16
#: At least this many row blocks, so that the temporaries of one block are at most ~1/16 of the data.
MIN_BLOCKS = 16


def block_rows(n: int, d: int) -> int:
    """Rows per block when the ``(n, d)`` data matrix is generated in row blocks: about
    :data:`BLOCK_ENTRIES` entries per block and at least :data:`MIN_BLOCKS` blocks."""
    return max(1, min(BLOCK_ENTRIES // max(d, 1), -(-n // MIN_BLOCKS)))


def _counter_based(key: jax.Array, n: int, d: int) -> bool:
    """Whether ``jax.random.normal(key, (n, d))`` is elementwise in a counter (the flat index),
    so that any row block can be drawn alone: a typed threefry key with JAX's partitionable
    threefry (the default since JAX 0.5), and 64-bit integers when ``n d >= 2^32``."""
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return False
    impl = jax.random.key_impl(key)
    if "threefry" not in str(getattr(impl, "name", impl)).lower():
        return False
    if not jax.config.jax_threefry_partitionable:
        return False
    return n * d < 2**32 or bool(jax.config.jax_enable_x64)


def normal_rows(key: jax.Array, row0, rows: int, n: int, d: int) -> jax.Array:
    """Rows ``[row0, row0 + rows)`` of ``standard_normal(key, (n, d))`` (float32, ``(rows, d)``),
    bit for bit, computed alone.

    JAX's partitionable threefry draws entry ``k`` (flat, row-major) of a ``normal(key, shape)``
    from ``threefry2x32(key, (hi(k), lo(k)))`` only, the two 32-bit words of the counter ``k``;
    the bits become a uniform on ``(-1, 1)`` by the mantissa trick and a Gaussian by
    ``sqrt(2) erfinv(u)`` (``jax.random.uniform`` / ``normal``). This is that map restricted to the
    counters of the block. Requires :func:`_counter_based` (``row0`` may be traced).
    """
    from jax.extend.random import threefry2x32_p

    k1, k2 = jax.random.key_data(key)
    if n * d < 2**32:
        flat = (jnp.asarray(row0, jnp.uint32) + jnp.arange(rows, dtype=jnp.uint32))[:, None] * jnp.uint32(d) \
            + jnp.arange(d, dtype=jnp.uint32)[None, :]
        hi, lo = jnp.zeros_like(flat), flat
    else:
        flat = (jnp.asarray(row0, jnp.uint64) + jnp.arange(rows, dtype=jnp.uint64))[:, None] * jnp.uint64(d) \
            + jnp.arange(d, dtype=jnp.uint64)[None, :]
        hi, lo = (flat >> jnp.uint64(32)).astype(jnp.uint32), flat.astype(jnp.uint32)
    b1, b2 = threefry2x32_p.bind(k1, k2, hi, lo)
    bits = b1 ^ b2
    # jax.random.uniform(key, shape, float32, minval=nextafter(-1, 0), maxval=1)
    lo_f = np.nextafter(np.float32(-1.0), np.float32(0.0))
    hi_f = np.float32(1.0)
    mantissa = jax.lax.shift_right_logical(bits, jnp.uint32(32 - 23)) | jnp.uint32(np.float32(1.0).view(np.uint32))
    floats = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - jnp.float32(1.0)
    u = jnp.maximum(lo_f, floats * (hi_f - lo_f) + lo_f)
    return jnp.float32(np.sqrt(2)) * jax.lax.erf_inv(u)


def sample_inputs(key: jax.Array, problem: GaussianMixture, c: jax.Array, v: jax.Array) -> jax.Array:
    """Inputs ``x = c v / sqrt(d) + sqrt(Delta) z`` for clusters ``c (n,)``; returns ``(n, d)``.

    ``z = standard_normal(key, (n, d))``. The matrix is filled in row blocks of
    :func:`block_rows` rows (``lax.fori_loop`` writing into the output), so that generating it
    takes the data plus one block's temporaries (about 1/16 of the data at most) instead of the
    random bits, the Gaussians and the ``c v^T`` outer product at full size (2.5x the data in
    float64, 4x in float32). The Gaussians are bit for bit those of the whole-matrix draw
    (:func:`normal_rows`); so is ``x`` in the simulator's jitted ``init`` on the CPU (tested),
    where XLA rounds ``sd z + c v / sqrt(d)`` as one fused multiply-add: the centre term below is
    written so that XLA makes the same choice. A backend that fuses otherwise may differ in
    the last bit of ``x``, as the whole-matrix program itself does between eager and jitted
    runs. Keys for which the blocks cannot be drawn alone (:func:`_counter_based` false) take
    the whole-matrix draw.
    """
    n, d = c.shape[0], v.shape[0]
    dtype = np.dtype(v.dtype)
    inv = dtype.type(1) / np.sqrt(np.float64(d)).astype(dtype)  # 1 / sqrt(d): XLA turns "/ sqrt(d)" into this
    sd = jnp.sqrt(problem.delta).astype(v.dtype)
    # the barrier keeps XLA from folding 1/sqrt(d) into the constants that made v (another rounding)
    v_inv = jax.lax.optimization_barrier(v) * inv

    def rows_of(z, cb):
        # c v / sqrt(d) for c in {+1, -1} is exactly +-(v / sqrt(d)): written as a select, the sum
        # rounds as the fused whole-matrix program always did (one multiply-add, sd * z + c v / sqrt(d))
        cb = cb[:, None]
        centre = jnp.where(cb == 1, v_inv[None, :], jnp.where(cb == -1, -v_inv[None, :], cb * v[None, :] * inv))
        return sd * z + centre

    if not _counter_based(key, n, d):
        return rows_of(standard_normal(key, (n, d), v.dtype), c)
    rows = block_rows(n, d)
    full, rest = divmod(n, rows)

    def block(i, x):
        row0 = i * rows
        z = normal_rows(key, row0, rows, n, d).astype(v.dtype)
        return jax.lax.dynamic_update_slice(x, rows_of(z, jax.lax.dynamic_slice(c, (row0,), (rows,))), (row0, 0))

    x = jax.lax.fori_loop(0, full, block, jnp.zeros((n, d), v.dtype))
    if rest:
        z = normal_rows(key, full * rows, rest, n, d).astype(v.dtype)
        x = jax.lax.dynamic_update_slice(x, rows_of(z, c[full * rows:]), (full * rows, 0))
    return x


def sample_dataset(key: jax.Array, problem: GaussianMixture, v: jax.Array, n: int) -> Dataset:
    """A training set of ``n`` samples around the centroid direction ``v (d,)``."""
    kc, kx = jax.random.split(key)
    c = sample_clusters(kc, problem, (n,), v.dtype)
    return Dataset(x=sample_inputs(kx, problem, c, v), c=c, y=labels(problem, c), v=v)


def sample_centroid(key: jax.Array, d: int, dtype=jnp.float32) -> jax.Array:
    """Centroid direction ``v (d,)`` with i.i.d. N(0, 1) entries (so ``|v|^2 / d -> 1``)."""
    return standard_normal(key, (d,), dtype)


def initial_weights(key: jax.Array, problem: GaussianMixture, v: jax.Array) -> jax.Array:
    """``w(0) = m0 v + sigma0 N(0, I_d)``, shape ``(d,)``."""
    return problem.m0 * v + problem.sigma0 * standard_normal(key, v.shape, v.dtype)


def output(problem: GaussianMixture, h: jax.Array) -> jax.Array:
    """Model output ``phi(h)``: ``h`` (two clusters) or ``h^2 - threshold`` (three clusters)."""
    return h if problem.clusters == 2 else h**2 - problem.threshold


def sample_loss(problem: GaussianMixture) -> losses.LossFn:
    """Elementwise loss as a function of label and *pre-activation*: ``(y, h) -> loss(y, phi(h))``."""
    base = losses.get_loss(problem.loss, problem.kappa)
    if problem.clusters == 2:
        return base
    return lambda y, h: base(y, output(problem, h))


def misclassified(problem: GaussianMixture, y: jax.Array, h: jax.Array) -> jax.Array:
    """1.0 where ``sign(phi(h)) != y`` (a tie ``phi(h) = 0`` counts as an error), else 0.0."""
    return (y * output(problem, h) <= 0).astype(h.dtype)


def training_observables(problem: GaussianMixture, y: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(train loss, train error)``: mean loss and fraction misclassified over the samples."""
    return jnp.mean(sample_loss(problem)(y, h)), jnp.mean(misclassified(problem, y, h))


def _gaussian_tail(x):
    """``P(xi > x)`` for ``xi ~ N(0, 1)``."""
    return 0.5 * erfc(x / jnp.sqrt(2.0))


def test_error(problem: GaussianMixture, m: jax.Array, q: jax.Array) -> jax.Array:
    """Exact generalisation error from ``(m, q)``, elementwise (d -> infinity or any d).

    Two clusters: ``erfc(m / sqrt(2 Delta q)) / 2`` (independent of rho). Three clusters with the
    even classifier: closed form from ``P(|h| > sqrt(theta))`` for ``h ~ N(c m, Delta q)``.
    """
    s = jnp.sqrt(problem.delta * q)
    live = s > 0  # q = 0 (w = 0, e.g. m0 = sigma0 = 0): h = c m exactly, a tie counts as an error
    s_safe = jnp.where(live, s, 1.0)
    if problem.clusters == 2:
        return jnp.where(live, _gaussian_tail(m / s_safe), (m <= 0).astype(s.dtype))
    r = jnp.sqrt(problem.threshold)
    outside_centre = 2.0 * _gaussian_tail(r / s_safe)  # centre predicted "outer": error
    inside_outer = 1.0 - _gaussian_tail((r - m) / s_safe) - _gaussian_tail((r + m) / s_safe)
    exact = (1.0 - problem.rho) * outside_centre + problem.rho * inside_outer
    return jnp.where(live, exact, problem.rho * (m * m <= problem.threshold).astype(s.dtype))


# Probabilists' Gauss-Hermite rule for E f(xi), xi ~ N(0, 1).
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(121)
_GH_WEIGHTS = _GH_WEIGHTS / np.sqrt(2 * np.pi)


def gaussian_average(f, mean: jax.Array, std: jax.Array) -> jax.Array:
    """``E f(mean + std xi)`` for ``xi ~ N(0, 1)`` by a 121-node Gauss-Hermite rule, elementwise."""
    nodes = jnp.asarray(_GH_NODES, dtype=jnp.result_type(mean, std))
    weights = jnp.asarray(_GH_WEIGHTS, dtype=nodes.dtype)
    vals = f(mean[..., None] + std[..., None] * nodes)
    return jnp.sum(vals * weights, axis=-1)


def test_loss(problem: GaussianMixture, m: jax.Array, q: jax.Array) -> jax.Array:
    """Generalisation loss ``E_c E_xi loss(y(c), phi(c m + sqrt(Delta q) xi))``, elementwise."""
    m = jnp.asarray(m)
    s = jnp.sqrt(problem.delta * jnp.asarray(q))
    loss = sample_loss(problem)
    total = jnp.zeros_like(m)
    for c, p in zip(*problem.cluster_probabilities()):
        y = labels(problem, jnp.asarray(c))
        total = total + p * gaussian_average(lambda h: loss(y, h), c * m, s)
    return total


# These are observables, not pytest tests (pytest collects imported ``test_*`` callables).
test_error.__test__ = False
test_loss.__test__ = False
