"""The config of ``sgdlab sde``: a weak-error study (which continuous model describes SGD, to which order).

Tables (every key validated; errors name the full key and the allowed range):

``[problem]``
    ``kind``: ``quadratic_1d`` (``a``, ``b``: per-sample ``f = a x^2/2 - b x``),
    ``least_squares`` (``features`` ``(n, d)`` and ``targets`` ``(n,)``, or random data from
    ``n_samples``, ``dim``, ``data_seed``, ``label_noise``), ``logistic`` (random data:
    ``n_samples``, ``dim``, ``data_seed``) or ``two_layer`` (random teacher data: ``n_samples``,
    ``dim`` inputs, ``width``); ``ridge`` (least squares / logistic), ``batch_size`` (SGD's ``B``),
    ``starts`` (one initial point per copy, ``(K, d)``).
``[study]``
    ``models`` (``gf, sme1, sme2, smf, smf_independent, smf_expected_gradient, svag``),
    ``observables`` (``mean, second_moment, variance, loss, inner, cross_cov, sq_distance``),
    ``horizon`` ``T``, ``etas`` (each ``T/eta`` an integer), ``svag_l``.
``[solver]``
    ``method`` (``auto``, ``exact``, ``monte_carlo``), ``paths``, ``scheme`` (``weak2``,
    ``talay_tubaro``, ``euler``), ``substeps`` (SDE steps per SGD step), ``seed``, ``chunk``,
    ``antithetic``.

plus ``name``, ``description`` and an optional ``[sweep]`` (:class:`~sgdlab.core.config.ExperimentConfig`).
``study.etas`` is the study's own axis (the fitted weak orders need every eta in one run), like
``study.models`` and ``study.observables`` (coordinates of the result): none of them can be a
sweep axis; any other key can.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from sgdlab.core.config import ExperimentConfig, Section, validate_config
from sgdlab.sde import problems as fs

__all__ = ["SDEConfig", "SDEProblemConfig", "SolverConfig", "StudyConfig", "default_config_path", "load_config"]

ModelName = Literal["gf", "sme1", "sme2", "smf", "smf_independent", "smf_expected_gradient", "svag"]
ObservableName = Literal["mean", "second_moment", "variance", "loss", "inner", "cross_cov", "sq_distance"]
TWO_POINT = {"inner", "cross_cov", "sq_distance"}
QUADRATIC_OBSERVABLES = {"mean", "second_moment", "variance", "inner", "cross_cov", "sq_distance", "loss"}

_KIND_KEYS = {
    "quadratic_1d": {"a", "b"},
    "least_squares": {"features", "targets", "n_samples", "dim", "data_seed", "label_noise", "ridge"},
    "logistic": {"n_samples", "dim", "data_seed", "ridge"},
    "two_layer": {"n_samples", "dim", "data_seed", "width"},
}
_OPTIONAL_KEYS = {"a", "b", "features", "targets", "n_samples", "dim", "data_seed", "label_noise", "ridge", "width"}


class SDEProblemConfig(Section):
    """``[problem]``: the finite-sum problem, SGD's batch size and the starting points."""

    kind: Literal["quadratic_1d", "least_squares", "logistic", "two_layer"] = "quadratic_1d"
    a: list[float] | None = Field(None, description="quadratic_1d: curvatures a_i (one per sample)")
    b: list[float] | None = Field(None, description="quadratic_1d: linear terms b_i (one per sample)")
    features: list[list[float]] | None = Field(None, description="least_squares: explicit features (n, d)")
    targets: list[float] | None = Field(None, description="least_squares: explicit targets (n,)")
    n_samples: int | None = Field(None, ge=2, le=100_000, description="random data: number of samples n, in [2, 100000]")
    dim: int | None = Field(None, ge=1, le=1000, description="random data: dimension (inputs for two_layer), in [1, 1000]")
    data_seed: int | None = Field(None, ge=0, description="random data: seed, in [0, inf)")
    label_noise: float | None = Field(None, ge=0, description="least_squares random data: label noise, in [0, inf)")
    ridge: float | None = Field(None, ge=0, description="least_squares / logistic: ridge, in [0, inf)")
    width: int | None = Field(None, ge=1, le=256, description="two_layer: hidden units, in [1, 256]")
    batch_size: int = Field(1, ge=1, le=10_000, description="SGD batch size B (with replacement), in [1, 10000]")
    starts: list[list[float]] | None = Field(None, description="initial points, one per copy, shape (K, d)")

    @model_validator(mode="after")
    def _check(self):
        allowed = _KIND_KEYS[self.kind]
        for key in sorted(_OPTIONAL_KEYS - allowed):
            if getattr(self, key) is not None:
                raise ValueError(f"{key} does not belong to kind = {self.kind!r} (its keys: {', '.join(sorted(allowed))})")
        if self.kind == "quadratic_1d":
            if self.a is None:
                self.a = [0.5, 1.0, 1.5]
                if self.b is None:
                    self.b = [0.5, 1.0, 1.0]
            if self.b is None:
                self.b = [0.0] * len(self.a)
            if len(self.a) < 2 or len(self.a) != len(self.b):
                raise ValueError(f"a and b need the same length >= 2 (one entry per sample); got {len(self.a)} and {len(self.b)}")
        if self.kind == "least_squares":
            explicit = self.features is not None or self.targets is not None
            random = self.n_samples is not None or self.dim is not None
            if explicit and random:
                raise ValueError("give either features/targets or n_samples/dim (random data), not both")
            if explicit:
                if self.features is None or self.targets is None:
                    raise ValueError("features and targets go together")
                widths = {len(r) for r in self.features}
                if len(widths) != 1 or len(self.features) != len(self.targets) or len(self.features) < 2:
                    raise ValueError("features must be a rectangular (n, d) list with n = len(targets) >= 2")
            else:
                self.n_samples = self.n_samples or 4
                self.dim = self.dim or 2
        if self.kind in ("logistic", "two_layer"):
            self.n_samples = self.n_samples or 8
            self.dim = self.dim or 2
        if self.kind == "two_layer":
            self.width = self.width or 3
        if self.starts is not None:
            if not self.starts or len({len(s) for s in self.starts}) != 1:
                raise ValueError("starts must be a non-empty rectangular (K, d) list")
            if len(self.starts[0]) != self.problem_dim:
                raise ValueError(f"starts have dimension {len(self.starts[0])}, the problem has d = {self.problem_dim}")
        return self

    @property
    def problem_dim(self) -> int:
        if self.kind == "quadratic_1d":
            return 1
        if self.kind == "least_squares" and self.features is not None:
            return len(self.features[0])
        if self.kind == "two_layer":
            return int(self.width) * (int(self.dim) + 1)
        return int(self.dim)

    @property
    def has_linear_gradient(self) -> bool:
        return self.kind in ("quadratic_1d", "least_squares")

    @property
    def sample_count(self) -> int:
        """The number of samples ``n`` of the problem."""
        if self.kind == "quadratic_1d":
            return len(self.a)
        if self.kind == "least_squares" and self.features is not None:
            return len(self.features)
        return int(self.n_samples)

    def to_problem(self) -> fs.FiniteSumProblem:
        """The finite-sum problem this section describes."""
        seed = self.data_seed or 0
        if self.kind == "quadratic_1d":
            return fs.quadratic_1d(self.a, self.b, batch_size=self.batch_size)
        if self.kind == "least_squares":
            if self.features is not None:
                return fs.least_squares(self.features, self.targets, ridge=self.ridge or 0.0, batch_size=self.batch_size)
            return fs.random_least_squares(seed, self.n_samples, self.dim, noise=0.5 if self.label_noise is None else self.label_noise,
                                           ridge=self.ridge or 0.0, batch_size=self.batch_size)
        if self.kind == "logistic":
            return fs.random_logistic(seed, self.n_samples, self.dim, ridge=0.1 if self.ridge is None else self.ridge, batch_size=self.batch_size)
        return fs.random_two_layer_network(seed, self.n_samples, self.dim, self.width, batch_size=self.batch_size)

    def starting_points(self, copies: int) -> np.ndarray:
        """``starts`` as ``(K, d)``; default ``(1, ..., 1)`` and ``-(1/2, ..., 1/2)``."""
        if self.starts is not None:
            return np.asarray(self.starts, dtype=np.float64)
        d = self.problem_dim
        return np.stack([np.ones(d), -0.5 * np.ones(d)])[: max(copies, 1)]


class StudyConfig(Section):
    """``[study]``: the models, observables, horizon and learning rates."""

    models: list[ModelName] = Field(default_factory=lambda: ["gf", "sme1", "smf", "smf_expected_gradient"])
    observables: list[ObservableName] = Field(default_factory=lambda: ["mean", "second_moment"])
    horizon: float = Field(1.0, gt=0, le=1000, description="horizon T, in (0, 1000]")
    etas: list[float] = Field(default_factory=lambda: [1 / 16, 1 / 32, 1 / 64, 1 / 128], description="learning rates, each in (0, horizon] with horizon/eta an integer")
    svag_l: int = Field(4, ge=1, le=1000, description="SVAG's l, in [1, 1000]")

    @model_validator(mode="after")
    def _check(self):
        if not self.models:
            raise ValueError("models must not be empty")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be distinct; got {self.models}")
        if not self.observables or len(set(self.observables)) != len(self.observables):
            raise ValueError(f"observables must be a non-empty list of distinct names; got {self.observables}")
        if len(self.etas) < 3 or len(set(self.etas)) != len(self.etas):
            raise ValueError(f"etas needs at least 3 distinct values (a slope with a confidence interval); got {self.etas}")
        for eta in self.etas:
            if not 0 < eta <= self.horizon:
                raise ValueError(f"etas: {eta} is outside (0, horizon = {self.horizon}]")
            steps = self.horizon / eta
            if steps > 1_000_000:
                raise ValueError(f"etas: horizon/eta = {steps:.3g} steps is above 1000000")
            if abs(steps - round(steps)) > 1e-9 * steps:
                raise ValueError(f"etas: horizon/eta = {self.horizon}/{eta} = {steps:g} must be an integer")
        self.etas = sorted(self.etas, reverse=True)
        return self


class SolverConfig(Section):
    """``[solver]``: exact moments or Monte Carlo, and the Monte Carlo settings."""

    method: Literal["auto", "exact", "monte_carlo"] = "auto"
    paths: int = Field(20_000, ge=100, le=10_000_000, description="Monte Carlo paths, in [100, 10000000]")
    scheme: Literal["weak2", "talay_tubaro", "euler"] = "weak2"
    substeps: int = Field(2, ge=1, le=1000, description="SDE steps per SGD step, in [1, 1000]")
    seed: int = Field(0, ge=0, description="random seed, in [0, inf)")
    chunk: int = Field(20_000, ge=100, le=1_000_000, description="paths per compiled batch, in [100, 1000000]")
    antithetic: bool = Field(False, description="antithetic pairs for the SDE Monte Carlo")


class SDEConfig(ExperimentConfig):
    """A weak-error study (``sgdlab sde``); ``SDEConfig()`` has the defaults of every table
    (1-d quadratic, exact moments)."""

    #: the study's own axes (coordinates of the result, and the etas of the fitted orders): a
    #: sweep over them would give every point different coordinates
    fixed_keys: ClassVar[dict[str, str]] = {
        "study.etas": "the study's own axis: the weak orders are fitted over the whole list",
        "study.models": "the study's own axis: every model is compared on the same Monte Carlo",
        "study.observables": "the study's own axis: a run measures every observable",
    }

    problem: SDEProblemConfig = Field(default_factory=SDEProblemConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)
    solver: SolverConfig = Field(default_factory=SolverConfig)

    @model_validator(mode="after")
    def _cross(self):
        copies = 2 if set(self.study.observables) & TWO_POINT else 1
        if self.problem.starts is not None and len(self.problem.starts) < copies:
            raise ValueError(
                f"problem.starts: observables {sorted(set(self.study.observables) & TWO_POINT)} need 2 starting points; got {len(self.problem.starts)}"
            )
        if self.solver.method == "exact":
            if not self.problem.has_linear_gradient:
                raise ValueError(
                    f"solver.method = 'exact' needs a linear-gradient problem (quadratic_1d or least_squares), "
                    f"not kind = {self.problem.kind!r}; use 'auto' or 'monte_carlo'"
                )
            shared_sme = [m for m in self.study.models if m in ("sme1", "sme2")]
            closes = self.problem.kind == "quadratic_1d" and not any(self.problem.b or [])
            if shared_sme and copies > 1 and not closes:
                raise ValueError(
                    f"solver.method = 'exact': {shared_sme} with shared noise on two points have no closed moments "
                    "(only 1-d with b = 0); use 'auto' (Monte Carlo for those)"
                )
        why = self._memory_problem()
        if why is not None:
            raise ValueError(why)
        return self

    @property
    def copies(self) -> int:
        return 2 if set(self.study.observables) & TWO_POINT else 1

    def memory_estimate(self) -> dict[str, tuple[float, str, str]]:
        """The bytes of the largest arrays of a run, by route: ``{route: (bytes, what, keys)}``.

        - ``exact`` (``solver.method`` not ``monte_carlo``): the per-sample Hessians ``n d^2`` of
          the linear-gradient test, and on linear-gradient problems the moment recursions of
          :mod:`sgdlab.sde.moments`: ``(1.25 n + 10) D^4`` floats, ``D = 1 + K d`` (the batch
          average of ``M_i kron M_i`` is formed as ``n`` blocks of ``D^4``; powers and ``expm`` a
          few more); 1.2 to 1.7 times the peak that ``tracemalloc`` measures.
        - ``monte_carlo`` (when some process is simulated): ``min(chunk, paths)`` paths at a time,
          per path ``16 + 4 K (n + d)`` floats for the drift over the samples plus, for the largest
          process, SGD ``2 K d (B + 1)`` (SVAG twice the batch), SMF noise ``c K n d`` (``c`` = 0.5,
          1, 4 for euler, talay_tubaro, weak2) and SME's ``Sigma^{1/2}`` ``3 K (n d + d^2)`` (euler;
          twice for talay_tubaro) or ``5 K (n d^2 + d^3)`` (weak2: its Ito correction differentiates
          ``Sigma^{1/2}`` along ``d`` columns). Calibrated against XLA's compiled memory analysis
          of the chunk kernels: 1 to 2 times what XLA reports (``tests/sde/test_sde_memory.py``).
        """
        pb, solver = self.problem, self.solver
        n, d, K, B = pb.sample_count, pb.problem_dim, self.copies, pb.batch_size
        models = set(self.study.models)
        out: dict[str, tuple[float, str, str]] = {}
        simulated = set(models) | {"sgd"}
        if solver.method != "monte_carlo":
            floats = n * d * d
            if pb.has_linear_gradient:
                D = 1 + K * d
                floats += (1.25 * n + 10) * float(D) ** 4
                closes = pb.kind == "quadratic_1d" and not any(pb.b or [])
                simulated = {m for m in models if m in ("sme1", "sme2")} if K > 1 and not closes else set()
            what = "the exact moments" if pb.has_linear_gradient else "the per-sample Hessians of the linear-gradient test"
            out["exact"] = (8.0 * floats, f"{what} (n = {n} samples, d = {d}, K = {K} copies)",
                            "problem.n_samples or problem.dim (or set solver.method = 'monte_carlo')")
        if simulated:
            c_smf = {"euler": 0.5, "talay_tubaro": 1, "weak2": 4}[solver.scheme]
            per = {"sgd": 2 * K * d * (B + 1), "svag": 2 * K * d * (2 * B + 1)}
            for m in simulated - {"sgd", "svag", "gf"}:
                if m in ("sme1", "sme2"):
                    per[m] = 5 * K * (n * d * d + float(d) ** 3) if solver.scheme == "weak2" else \
                        (3 if solver.scheme == "euler" else 6) * K * (n * d + d * d)
                else:
                    per[m] = c_smf * K * n * d
            top = max(sorted(simulated), key=lambda m: per.get(m, 0.0))
            paths = min(solver.chunk, solver.paths)
            floats = paths * (16 + 4 * K * (n + d) + per.get(top, 0.0)) + n * d
            keys = "solver.chunk, problem.n_samples or problem.dim"
            if top in ("sgd", "svag"):
                keys += " (or problem.batch_size)"
            elif top in ("sme1", "sme2") and solver.scheme == "weak2":
                keys += f" (or drop {top} from study.models, or use solver.scheme = 'euler': its weak2 Ito correction needs n d^2 floats a path)"
            out["monte_carlo"] = (8.0 * floats, f"the Monte Carlo of {top} ({paths} paths per chunk, n = {n} samples, d = {d}, K = {K} copies)", keys)
        return out

    def _memory_problem(self) -> str | None:
        """The refusal message if the largest arrays of the run would not fit in memory."""
        from sgdlab.core.memory import memory_problem

        routes = self.memory_estimate()
        if not routes:
            return None
        _, what, keys = max(routes.values())
        return memory_problem(sum(v[0] for v in routes.values()), what, keys)


def default_config_path() -> Path:
    """The built-in default example ``examples/sde/default.toml``."""
    from importlib import resources

    return Path(str(resources.files("sgdlab") / "examples" / "sde" / "default.toml"))


def load_config(source: SDEConfig | dict[str, Any] | str | Path | None = None) -> SDEConfig:
    """A validated :class:`SDEConfig` from itself, a dict of TOML keys, a TOML path or ``None``
    (the built-in ``default`` example). Raises :class:`~sgdlab.core.errors.ConfigError` with one
    line per problem, each naming the key."""
    return validate_config(SDEConfig, default_config_path() if source is None else source)
