"""Direct simulation of GD / SGD / persistent SGD / SGF / Langevin on the Gaussian mixture.

The numerical core, pure JAX functions of a static :class:`SimSpec` (shapes, code paths) and
traced :class:`SimParams` (numbers), so that configs differing only in values share one
compilation and can be vmapped together (:func:`batched`):

- ``init(spec, params, key) -> (SimData, SimState)``: draws one seed's centroid, data, initial
  weights and batch mask from ``fold_in(key, i)`` streams;
- ``step(spec, params, data, key, state)``: one step, a thin call of :func:`step_streams`, THE
  step (explicit mask/noise streams, optional :class:`Tangent` for the linear response), shared
  with the replicas and the linear response of :mod:`sgdlab.dmft.noise_sim`;
- ``advance(spec, params, data, key, state, n_blocks) -> (state, obs)``: ``n_blocks`` blocks of
  ``save_every`` steps each, by nested ``lax.scan``; returns the order parameters at the *end* of
  each block. Only scalars per saved time are kept, never the weights history.

:func:`batched` returns them jitted over a flat batch of (point, seed) entries; the caller
(:func:`sgdlab.dmft.experiment.simulate`) chunks the time loop so that a progress bar can be shown and a
non-finite value stops the run at the first chunk where it appears. :func:`make_simulator` binds
one config into an unbatched jax-md-style triple for tests and scripts.

Cost per step: two passes over the data matrix (``h = X w / sqrt(d)`` and
``X^T (s * loss') / sqrt(d)``, by row blocks: :func:`fields`, :func:`data_gradient`); the pre-activations ``h`` of the current weights are carried in the
state, so saving the training loss/error costs no extra pass.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.dmft import losses
from sgdlab.dmft.batch_mask import MaskChain, init_mask, mask_chain, step_mask
from sgdlab.core.keys import seed_keys  # noqa: F401  (re-exported: the simulator's seed keys)
from sgdlab.dmft.products import data_gradient, fields
from sgdlab.dmft.update import UpdateRule, apply_update, update_rule
from sgdlab.dmft import problem as gm

# Independent random streams of one seed: fold_in(key(seed), STREAM).
STREAM_CENTROID, STREAM_DATA, STREAM_INIT, STREAM_MASK, STREAM_NOISE, STREAM_TEST = range(6)
#: Stream of the replicas' own mask/noise keys (replica r >= 1): fold_in(fold_in(key, 16), r).
STREAM_REPLICA = 16

OBSERVABLES = ("m", "q", "train_loss", "train_error", "test_loss", "test_error", "batch_occupancy")
SAMPLED_OBSERVABLES = ("test_loss_sampled", "test_error_sampled")


class SimState(NamedTuple):
    """State of one run: weights ``w (d,)``, pre-activations ``h = X w / sqrt(d)`` ``(n,)``,
    batch mask ``s (n,)`` (bool) and the step counter ``k``; with momentum also the previous
    weights ``w_prev (d,)`` and their pre-activations ``h_prev (n,)`` (``w_{-1} = w_0``), else
    empty ``(0,)`` arrays."""

    w: jax.Array
    h: jax.Array
    s: jax.Array
    k: jax.Array
    w_prev: jax.Array
    h_prev: jax.Array


class SimData(NamedTuple):
    """Fixed data of one run: the training set and an optional sampled test set
    (``x_test (n_test, d)``, ``y_test (n_test,)``, empty when not asked for)."""

    train: gm.Dataset
    x_test: jax.Array
    y_test: jax.Array


@dataclass(frozen=True)
class SimSpec:
    """Static structure of a simulation: everything that fixes shapes or code paths.

    Two configs with equal specs share one compiled program (and can be vmapped together); the
    numbers that differ between them live in :class:`SimParams`.
    """

    clusters: int
    loss: str
    d: int
    n: int
    save_every: int = 1
    dtype: str = "float32"
    test_samples: int = 0
    full_batch: bool = False
    langevin: bool = False
    per_step: bool = False
    momentum: bool = False
    nesterov: bool = False


class SimParams(NamedTuple):
    """Numbers of a simulation (scalars, or arrays with a leading axis when vmapped over points)."""

    delta: jax.Array
    rho: jax.Array
    kappa: jax.Array
    threshold: jax.Array
    m0: jax.Array
    sigma0: jax.Array
    chain: MaskChain
    rule: UpdateRule
    beta: jax.Array = np.float64(0.0)


def simulation_setup(
    problem: gm.GaussianMixture,
    algorithm: str,
    d: int,
    eta: float,
    b: float = 1.0,
    tau: float | None = None,
    temperature: float = 0.0,
    normalisation: str = "unnormalised",
    save_every: int = 1,
    dtype=jnp.float32,
    test_samples: int = 0,
    plan=None,
    momentum: float = 0.0,
    nesterov: bool = False,
) -> tuple[SimSpec, SimParams]:
    """Split a simulation into its static :class:`SimSpec` and its :class:`SimParams`.

    ``algorithm`` is one of ``gd, sgd, persistent_sgd, sgf, langevin`` (Langevin uses the
    persistent chain with ``(b, tau)`` and adds ``sqrt(2 T eta) N(0, I)`` per step). ``plan``
    (a :class:`sgdlab.dmft.steps.StepPlan` with schedules) gives per-step ``eta_k`` and mask
    transitions; ``momentum`` ``beta`` and ``nesterov`` the update with memory (see :func:`step_streams`).
    """
    langevin = algorithm == "langevin"
    chain = mask_chain("persistent_sgd" if langevin else algorithm, eta, b, tau)
    rule = update_rule(eta, problem.ridge, b, normalisation, temperature if langevin else 0.0)
    per_step = plan is not None and not plan.constant
    if per_step:
        chain = MaskChain(np.asarray(plan.p_on, np.float64), np.asarray(plan.p_off, np.float64), plan.b0)
        rule = rule._replace(eta=np.asarray(plan.eta, np.float64))
    spec = SimSpec(
        clusters=problem.clusters,
        loss=problem.loss,
        d=d,
        n=problem.n_samples(d),
        save_every=save_every,
        dtype=jnp.dtype(dtype).name,
        test_samples=test_samples,
        full_batch=bool(np.all(np.asarray(plan.b if per_step else chain.b) == 1.0)),
        langevin=langevin and temperature > 0,
        per_step=per_step,
        momentum=momentum > 0,
        nesterov=bool(nesterov and momentum > 0),
    )
    as_num = lambda x: np.asarray(x, np.float64) if np.ndim(x) else np.float64(x)  # noqa: E731
    params = SimParams(
        *(as_num(getattr(problem, k)) for k in ("delta", "rho", "kappa", "threshold", "m0", "sigma0")),
        MaskChain(*map(as_num, chain)),
        UpdateRule(*map(as_num, rule)),
        np.float64(momentum),
    )
    return spec, params


def _problem(spec: SimSpec, params: SimParams) -> gm.GaussianMixture:
    """The problem rebuilt from (possibly traced) numbers, cast to the simulation dtype."""
    num = lambda x: jnp.asarray(x, spec.dtype)  # noqa: E731
    return gm.GaussianMixture(
        clusters=spec.clusters,
        loss=spec.loss,
        delta=num(params.delta),
        rho=num(params.rho),
        kappa=num(params.kappa),
        threshold=num(params.threshold),
        ridge=num(params.rule.ridge),
        m0=num(params.m0),
        sigma0=num(params.sigma0),
    )


def init(spec: SimSpec, params: SimParams, key: jax.Array) -> tuple[SimData, SimState]:
    """Draw one seed's centroid, data, initial weights and mask from ``fold_in(key, stream)``."""
    problem, d, dtype = _problem(spec, params), spec.d, jnp.dtype(spec.dtype)
    v = gm.sample_centroid(jax.random.fold_in(key, STREAM_CENTROID), d, dtype)
    train = gm.sample_dataset(jax.random.fold_in(key, STREAM_DATA), problem, v, spec.n)
    if spec.test_samples > 0:
        test = gm.sample_dataset(jax.random.fold_in(key, STREAM_TEST), problem, v, spec.test_samples)
        x_test, y_test = test.x, test.y
    else:
        x_test, y_test = jnp.zeros((0, d), dtype), jnp.zeros((0,), dtype)
    w = gm.initial_weights(jax.random.fold_in(key, STREAM_INIT), problem, v)
    if spec.full_batch:
        s = jnp.ones((spec.n,), bool)
    else:
        s = init_mask(jax.random.fold_in(jax.random.fold_in(key, STREAM_MASK), 0), params.chain, spec.n)
    h = fields(train.x, w) / np.sqrt(d).astype(dtype)
    empty = jnp.zeros((0,), dtype)
    w_prev, h_prev = (w, h) if spec.momentum else (empty, empty)
    return SimData(train, x_test, y_test), SimState(w, h, s, jnp.zeros((), jnp.int32), w_prev, h_prev)


class Tangent(NamedTuple):
    """Tangent vectors pushed forward by the linearised dynamics (linear response): ``w (P, d)``
    and their pre-activations ``h = x w / sqrt(d)`` ``(P, n)``, carried like :attr:`SimState.h`
    so that one step reads the data twice for the state and all ``P`` tangents together."""

    w: jax.Array
    h: jax.Array


def replica_keys(key: jax.Array, n_replicas: int) -> tuple[jax.Array, jax.Array]:
    """``(mask_keys, noise_keys)``, each ``(n_replicas,)`` typed keys: replica 0 has the seed's own
    ``MASK``/``NOISE`` streams; replica ``r >= 1`` the streams of ``fold_in(fold_in(key, STREAM_REPLICA), r)``."""
    masks, noises = [jax.random.fold_in(key, STREAM_MASK)], [jax.random.fold_in(key, STREAM_NOISE)]
    for r in range(1, n_replicas):  # static loop over replicas (not over time)
        base = jax.random.fold_in(jax.random.fold_in(key, STREAM_REPLICA), r)
        masks.append(jax.random.fold_in(base, STREAM_MASK))
        noises.append(jax.random.fold_in(base, STREAM_NOISE))
    return jnp.stack(masks), jnp.stack(noises)


def step_streams(spec: SimSpec, params: SimParams, data: SimData, mask_key: jax.Array, noise_key: jax.Array,
                 state: SimState, tangent: Tangent | None = None):
    """THE step of the simulator, with explicit mask and noise base keys: data gradient on the
    batch, update (+ Langevin noise ``fold_in(noise_key, k)``), next mask (``fold_in(mask_key,
    k + 1)``), new ``h``. :func:`step` calls it with the seed's own streams; the replicas of
    :mod:`sgdlab.dmft.noise_sim` with theirs (:func:`replica_keys`).

    With ``tangent``, returns ``(state, tangent)``: also the image of the tangents under the
    linearised step (masks and noise fixed): ``h_t <- loss''(y, h) s h_t`` enters the data
    gradient, and the update is affine in ``(w, g)``. The state and the ``P`` tangents share one
    ``X^T [.]`` and one ``X [.]`` product.

    With momentum ``beta`` (``spec.momentum``), the step is (Polyak heavy ball; Nesterov with
    ``gamma = beta``, else ``gamma = 0``)::

        y_k = w_k + gamma (w_k - w_{k-1}),
        w_{k+1} = w_k + beta (w_k - w_{k-1}) - eta_k [lambda y_k + g(y_k) / B] [+ Langevin noise],

    with ``w_{-1} = w_0``; the fields of ``y_k`` are ``h_k + gamma (h_k - h_{k-1})``, so the step
    still reads the data twice. With per-step arrays (``spec.per_step``), ``eta_k`` and the mask
    transition ``k -> k + 1`` are entry ``k`` of ``params.rule.eta`` and ``params.chain``."""
    sqrt_d = np.sqrt(spec.d).astype(state.w.dtype)
    loss = gm.sample_loss(_problem(spec, params))
    x, y = data.train.x, data.train.y
    rule = UpdateRule(*(jnp.asarray(r, state.w.dtype) for r in params.rule))
    chain = params.chain
    if spec.per_step:
        rule = rule._replace(eta=rule.eta[state.k])
        chain = MaskChain(chain.p_on[state.k], chain.p_off[state.k], chain.b)
    nk = jax.random.fold_in(noise_key, state.k) if spec.langevin else None
    if spec.momentum:
        if tangent is not None:
            raise NotImplementedError("the linear response (tangent) of a momentum method is not implemented")
        return _momentum_step(spec, params, data, mask_key, state, rule, chain, nk, loss, sqrt_d)
    r = jnp.where(state.s, losses.derivative(loss)(y, state.h), 0.0)
    if tangent is None:
        w = apply_update(rule, state.w, data_gradient(x, r) / sqrt_d, nk)
        h = fields(x, w) / sqrt_d
    else:
        rt = jnp.where(state.s, losses.derivative(loss, 2)(y, state.h), 0.0) * tangent.h  # (P, n)
        g = data_gradient(x, jnp.concatenate([r[None], rt])) / sqrt_d  # (P+1, d)
        w = apply_update(rule, state.w, g[0], nk)
        wt = apply_update(rule, tangent.w, g[1:], None)  # the linear part of the affine update
        hh = fields(x, jnp.concatenate([w[None], wt])) / sqrt_d  # (P+1, n)
        h, tangent = hh[0], Tangent(wt, hh[1:])
    s = state.s
    if not spec.full_batch:
        s = step_mask(jax.random.fold_in(mask_key, state.k + 1), chain, s)
    new = SimState(w, h, s, state.k + 1, state.w_prev, state.h_prev)
    return new if tangent is None else (new, tangent)


def _momentum_step(spec, params, data, mask_key, state, rule, chain, noise_key, loss, sqrt_d) -> SimState:
    """The step with momentum of :func:`step_streams` (same streams, same two data passes)."""
    x, y = data.train.x, data.train.y
    beta = jnp.asarray(params.beta, state.w.dtype)
    gamma = beta if spec.nesterov else jnp.zeros_like(beta)
    w_look = state.w + gamma * (state.w - state.w_prev)
    h_look = state.h + gamma * (state.h - state.h_prev)
    r = jnp.where(state.s, losses.derivative(loss)(y, h_look), 0.0)
    # apply_update(y_k) = y_k - eta [lambda y_k + g / B] (+ noise); add the heavy-ball term.
    w = apply_update(rule, w_look, data_gradient(x, r) / sqrt_d, noise_key) + (beta - gamma) * (state.w - state.w_prev)
    h = fields(x, w) / sqrt_d
    s = state.s
    if not spec.full_batch:
        s = step_mask(jax.random.fold_in(mask_key, state.k + 1), chain, s)
    return SimState(w, h, s, state.k + 1, state.w, state.h)


def step(spec: SimSpec, params: SimParams, data: SimData, key: jax.Array, state: SimState) -> SimState:
    """One step of the seed ``key``: :func:`step_streams` with the seed's own mask and noise streams."""
    return step_streams(spec, params, data, jax.random.fold_in(key, STREAM_MASK), jax.random.fold_in(key, STREAM_NOISE), state)


def observe(spec: SimSpec, params: SimParams, data: SimData, state: SimState) -> dict:
    """Order parameters of the current state (a dict of scalars, see :func:`observable_names`)."""
    problem, d = _problem(spec, params), spec.d
    w, h = state.w, state.h
    m = jnp.dot(w, data.train.v) / d
    q = jnp.dot(w, w) / d
    train_loss, train_error = gm.training_observables(problem, data.train.y, h)
    obs = dict(
        m=m,
        q=q,
        train_loss=train_loss,
        train_error=train_error,
        test_loss=gm.test_loss(problem, m, q),
        test_error=gm.test_error(problem, m, q),
        batch_occupancy=jnp.mean(state.s.astype(w.dtype)),
    )
    if spec.test_samples > 0:
        obs["test_loss_sampled"], obs["test_error_sampled"] = gm.training_observables(
            problem, data.y_test, fields(data.x_test, w) / np.sqrt(d).astype(w.dtype)
        )
    return obs


def advance(spec: SimSpec, params: SimParams, data: SimData, key: jax.Array, state: SimState, n_blocks: int):
    """``n_blocks`` blocks of ``save_every`` steps (nested ``lax.scan``); returns the final state
    and the observables at the end of each block (each of shape ``(n_blocks,)``)."""

    def block(state, _):
        state = jax.lax.fori_loop(0, spec.save_every, lambda i, st: step(spec, params, data, key, st), state)
        return state, observe(spec, params, data, state)

    return jax.lax.scan(block, state, None, length=n_blocks)


@functools.lru_cache(maxsize=64)
def batched(spec: SimSpec, entries: str = "auto") -> tuple[Callable, Callable, Callable]:
    """Jitted ``(init, observe, advance)`` over one flat batch axis of runs.

    Every argument carries that leading axis, the params too: a batch entry is one (point, seed)
    pair, so configs that differ only in values run in one program (use :func:`tile_params`).
    ``advance(params, data, keys, state, n_blocks)`` takes ``n_blocks`` as a static argument.
    Cached per ``(spec, entries)``: every config with the same static structure reuses one
    compilation.

    ``entries`` says how the batch axis is run:

    - ``"map"``: one entry after the other (``lax.map``) in one compiled program. An entry's
      numbers then do not depend on the batch it runs in (its width, its other entries): a seed
      gives the same bits alone, in any seed list, ``seed_batch`` or sweep task (tested). On a CPU
      it is also the fast layout at ``d >= 1000``: one seed's data are read twice per step while
      they sit in cache, and the row-blocked products (:func:`fields`) run near bandwidth
      (docs/benchmarks.md: 2-3x the vmapped batch at ``d = 2000``; 0.5-0.7x at ``d <= 300``).
    - ``"vmap"``: the entries vmapped into batched products, the layout for a GPU. Their
      floating-point reductions may differ in the last bit with the batch width.
    - ``"auto"`` (default): ``"map"`` on a CPU, ``"vmap"`` on any other backend.
    """
    if entries == "auto":
        entries = "map" if jax.default_backend() == "cpu" else "vmap"
    if entries == "map":
        def init_b(p, k):
            return jax.lax.map(lambda a: init(spec, *a), (p, k))

        def observe_b(p, dt, st):
            return jax.lax.map(lambda a: observe(spec, *a), (p, dt, st))

        def advance_b(p, dt, k, st, nb):
            return jax.lax.map(lambda a: advance(spec, *a, nb), (p, dt, k, st))
    elif entries == "vmap":
        init_b = jax.vmap(partial(init, spec))
        observe_b = jax.vmap(partial(observe, spec))
        advance_b = jax.vmap(lambda p, dt, k, st, nb: advance(spec, p, dt, k, st, nb), in_axes=(0, 0, 0, 0, None))
    else:
        raise ValueError(f"entries = {entries!r}; allowed: 'auto', 'map', 'vmap'")
    return jax.jit(init_b), jax.jit(observe_b), jax.jit(advance_b, static_argnums=4)


def tile_params(params: SimParams | list[SimParams], seeds_per_point: int) -> SimParams:
    """Stack the params of one or more points and repeat each ``seeds_per_point`` times:
    the flat batch layout of :func:`batched` (entry ``i * seeds_per_point + j`` = point i, seed j)."""
    plist = [params] if isinstance(params, SimParams) else list(params)
    stacked = jax.tree_util.tree_map(lambda *xs: np.asarray(xs, dtype=np.float64), *plist)
    return jax.tree_util.tree_map(lambda x: np.repeat(x, seeds_per_point, axis=0), stacked)


class Simulator(NamedTuple):
    """One seed's pure simulator with its parameters bound: ``init(key) -> (SimData, SimState)``,
    ``advance(data, key, state, n_blocks) -> (state, obs)``, ``observe(data, state) -> dict``."""

    init: Callable
    advance: Callable
    observe: Callable
    spec: SimSpec
    params: SimParams


def make_simulator(*args, **kwargs) -> Simulator:
    """Build the unbatched simulator of one seed; arguments as :func:`simulation_setup`."""
    spec, params = simulation_setup(*args, **kwargs)
    return Simulator(
        partial(init, spec, params),
        partial(advance, spec, params),
        partial(observe, spec, params),
        spec,
        params,
    )


def observable_names(test_samples: int = 0) -> tuple[str, ...]:
    """Names of the saved observables (with the sampled-test ones when asked for)."""
    return OBSERVABLES + (SAMPLED_OBSERVABLES if test_samples > 0 else ())
