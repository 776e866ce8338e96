"""The plan of a sweep: its points (one validated config each), dims and task groups.

See :mod:`sgdlab.core.sweep` for the engine that runs a plan.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from sgdlab.core.config import ConfigError, ExperimentConfig, set_dotted
from sgdlab.core.study import Study


@dataclass
class Point:
    """One grid point: its position, overrides, validated config (or the validation error)."""

    index: tuple[int, ...]
    flat: int
    overrides: dict[str, Any]
    config: ExperimentConfig | None = None
    error: str | None = None

    @property
    def config_hash(self) -> str:
        return self.config.config_hash() if self.config is not None else ""


@dataclass
class Plan:
    """The sweep's dims (name, coordinate values), points, and extra coordinates along ``zip``."""

    study: Study
    base: ExperimentConfig
    dims: list[tuple[str, list[Any]]]
    points: list[Point]
    zip_coords: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for _, v in self.dims)

    @property
    def sweep_dims(self) -> list[str]:
        return [name for name, _ in self.dims]


def plan_sweep(study: Study, cfg: ExperimentConfig, order: list[str] | None = None) -> Plan:
    """Expand ``cfg.sweep`` into points (validated one by one; invalid ones carry their error).

    The grid's dims come in the order of the ``[sweep]`` table, or of ``order`` (the
    ``sweep_dims`` of a store: its config JSON has sorted keys)."""
    if cfg.sweep is None:
        raise ConfigError("the config has no [sweep] table")
    sw = cfg.sweep
    keys = [k for k in (order or []) if k in sw.grid] or list(sw.grid)
    dims: list[tuple[str, list[Any]]] = [(k, list(sw.grid[k])) for k in keys]
    if sw.zip:
        dims.append(("zip", list(range(len(next(iter(sw.zip.values())))))))
    base = cfg.model_dump(mode="json", exclude={"sweep"})
    points = []
    for flat, index in enumerate(itertools.product(*(range(len(v)) for _, v in dims))):
        overrides: dict[str, Any] = {}
        for (name, values), i in zip(dims, index):
            if name == "zip":
                overrides.update({k: v[i] for k, v in sw.zip.items()})
            else:
                overrides[name] = values[i]
        tree = json.loads(json.dumps(base))
        for key, value in overrides.items():
            set_dotted(tree, key, value)
        point = Point(index, flat, overrides)
        try:
            point.config = study.load(tree)
        except ConfigError as err:
            point.error = str(err)
        points.append(point)
    return Plan(study, cfg, dims, points, dict(sw.zip))


def _groups(plan: Plan, todo: list[Point]) -> list[list[Point]]:
    """Points of equal ``group_key``, ``points_per_task`` at a time."""
    key = plan.study.group_key or (lambda c: id(c))
    by_key: dict[Any, list[Point]] = {}
    for p in todo:
        by_key.setdefault(key(p.config), []).append(p)
    size = plan.base.sweep.points_per_task
    return [g[i : i + size] for g in by_key.values() for i in range(0, len(g), size)]
