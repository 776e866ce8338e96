"""The record of one claim, its statistical verdict rules, and its JSON store.

A :class:`Claim` is what a ``claim_xxx(small)`` function returns: the claim in words, the paper,
the command that reproduces it, the measured :class:`Number` s with their errors, the verdict
(``reproduced`` / ``partly`` / ``not reproduced``), the rule that decided it and why. Records are
stored as JSON in ``claims/results/NAME.json`` (written beside, then renamed in: a reader never
sees half a file) and the page ``docs/claims.md`` is rendered from them alone.

Errors are of one of three kinds (``Number.kind``):

- ``"se"``: ``error`` is one standard error (seeds, Monte-Carlo solves);
- ``"ci95"``: ``low, high`` is a 95% confidence interval (a fitted order or exponent);
- ``"exact"``: a deterministic number (an ODE solve, exact moments, a closed form); agreement is
  to a relative ``1e-6`` (solver round-off across machines).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

#: the allowed verdicts, in the order the page explains them
VERDICTS = ("reproduced", "partly", "not reproduced")
#: where the records live (beside this module)
RESULTS = Path(__file__).resolve().parent / "results"
#: relative tolerance of "exact" numbers (deterministic solves rerun elsewhere)
EXACT_RTOL = 1e-6
#: a rerun agrees with the stored number when |new - old| <= AGREE_Z * combined standard error
AGREE_Z = 3.0


@dataclass
class Number:
    """One measured number: ``value`` with its error (see the module docstring for ``kind``)."""

    name: str
    value: float
    error: float | None = None
    low: float | None = None
    high: float | None = None
    kind: Literal["se", "ci95", "exact"] = "se"
    note: str = ""

    def __post_init__(self):
        self.value = float(self.value)
        if self.kind == "se" and self.error is None:
            raise ValueError(f"Number {self.name!r}: kind 'se' needs an error")
        if self.kind == "ci95" and (self.low is None or self.high is None):
            raise ValueError(f"Number {self.name!r}: kind 'ci95' needs low and high")
        for k in ("error", "low", "high"):
            v = getattr(self, k)
            if v is not None:
                setattr(self, k, float(v))

    @property
    def sigma(self) -> float:
        """One standard error (a 95% interval's half width / 1.96; 0 for exact numbers)."""
        if self.kind == "se":
            return float(self.error)
        if self.kind == "ci95":
            return (self.high - self.low) / (2 * 1.959964)
        return 0.0

    def agrees_with(self, other: Number) -> tuple[bool, str]:
        """Whether ``other`` (a rerun) agrees with this (stored) number within the errors."""
        if not (math.isfinite(self.value) and math.isfinite(other.value)):
            same = (math.isnan(self.value) and math.isnan(other.value)) or self.value == other.value
            return same, f"{self.name}: {other.value} vs stored {self.value}"
        diff = abs(other.value - self.value)
        sig = math.hypot(self.sigma, other.sigma)
        tol = AGREE_Z * sig if sig > 0 else EXACT_RTOL * max(1.0, abs(self.value))
        return diff <= tol, f"{self.name}: {other.value:.6g} vs stored {self.value:.6g} (|diff| {diff:.3g}, allowed {tol:.3g})"


@dataclass
class Claim:
    """The record of one claim (what the page shows and the tests check)."""

    name: str
    paper: str
    claim: str
    command: str
    numbers: list[Number]
    verdict: Literal["reproduced", "partly", "not reproduced"]
    rule: str
    why: str
    small: bool = False
    elapsed_s: float = 0.0
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}; allowed: {', '.join(VERDICTS)}")
        self.numbers = [n if isinstance(n, Number) else Number(**n) for n in self.numbers]

    def number(self, name: str) -> Number:
        """The number called ``name`` (KeyError if there is none)."""
        for n in self.numbers:
            if n.name == name:
                return n
        raise KeyError(f"claim {self.name!r} has no number {name!r}")

    def to_json(self) -> str:
        return json.dumps(_clean(asdict(self)), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Claim:
        return cls(**json.loads(text))


def _clean(obj):
    """JSON-safe copy: numpy scalars to Python, NaN/inf kept as JSON's NaN/Infinity tokens."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj


def store(claim: Claim, directory: Path = RESULTS) -> Path:
    """Write ``claim`` to ``directory/NAME.json`` atomically (a temporary file beside, renamed in)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{claim.name}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{claim.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(claim.to_json())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(name: str, directory: Path = RESULTS) -> Claim:
    """The stored record ``directory/NAME.json``."""
    return Claim.from_json((directory / f"{name}.json").read_text())


def load_all(directory: Path = RESULTS) -> dict[str, Claim]:
    """Every stored record, by name."""
    return {p.stem: Claim.from_json(p.read_text()) for p in sorted(directory.glob("*.json"))}


# ------------------------------------------------------------------------------------------------
# Statistical helpers of the verdict rules
# ------------------------------------------------------------------------------------------------


def mean_se(x, axis=0):
    """Mean and standard error of the mean of ``x`` along ``axis`` (``ddof = 1``)."""
    x = np.asarray(x, np.float64)
    n = x.shape[axis]
    return x.mean(axis=axis), x.std(axis=axis, ddof=1) / math.sqrt(n)


def z_score(a: float, sa: float, b: float = 0.0, sb: float = 0.0) -> float:
    """``(a - b) / sqrt(sa^2 + sb^2)`` (inf when both errors vanish and a != b)."""
    s = math.hypot(sa, sb)
    if s == 0:
        return 0.0 if a == b else math.copysign(math.inf, a - b)
    return (a - b) / s


def fit_order(x: Sequence[float], err: Sequence[float], se: Sequence[float] | None = None):
    """Order ``p`` of ``|err| ~ C x^p``: weighted least squares of ``log|err|`` on ``log x``.

    Returns ``(p, low, high)``, the 95% interval from Student's t with ``n - 2`` degrees of freedom
    on the residual scatter, combined in quadrature with the propagated errors
    ``var log|e| = (se / e)^2`` when ``se`` is given (the Monte-Carlo part)."""
    from scipy import stats

    x = np.log(np.asarray(x, np.float64))
    e = np.asarray(err, np.float64)
    y = np.log(np.abs(e))
    n = len(x)
    X = np.stack([np.ones(n), x], axis=1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    xtx_inv = np.linalg.inv(X.T @ X)
    var = 0.0
    if n > 2:
        s2 = float(resid @ resid) / (n - 2)
        var += s2 * xtx_inv[1, 1] * stats.t.ppf(0.975, n - 2) ** 2 / 1.959964**2
    if se is not None:
        vy = (np.asarray(se, np.float64) / e) ** 2
        A = xtx_inv @ X.T
        var += float(A[1] ** 2 @ vy)
    half = 1.959964 * math.sqrt(var)
    return float(coef[1]), float(coef[1] - half), float(coef[1] + half)


def cli_command(command: str, example: str, overrides: dict | None = None) -> str:
    """The ``sgdlab COMMAND --example EXAMPLE --set KEY=VALUE ...`` line that runs ``example`` with the
    nested ``overrides`` (TOML values; each ``--set`` quoted for the shell when it needs it)."""
    def flat(tree, prefix=""):
        for k, v in tree.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    def toml(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(toml(x) for x in v) + "]"
        if isinstance(v, float):
            return repr(v)
        return str(v)

    parts = [f"sgdlab {command} --example {example}"]
    for key, value in flat(overrides or {}):
        item = f"{key}={toml(value)}"
        parts.append(f"--set '{item}'" if any(c in item for c in " []'\"") else f"--set {item}")
    return " ".join(parts)
