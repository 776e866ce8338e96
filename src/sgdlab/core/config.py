"""The config base shared by every wing: strict pydantic sections, TOML read / merge / ``--set``.

Every study's config is an :class:`ExperimentConfig`: sections that forbid unknown keys, a
``name`` (the output name, by default the TOML file's stem), a ``description``, an optional
``[sweep]`` table (:class:`SweepConfig`), and a canonical JSON with a short hash
(:meth:`ExperimentConfig.to_json`, :meth:`ExperimentConfig.config_hash`) that identifies a result.

:func:`validate_config` is the one loader of every config type: it takes an instance, a dict of
TOML keys or a TOML path and raises :class:`~sgdlab.core.errors.ConfigError` with one line per
problem, each naming the key in full (``algorithm.eta``).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sgdlab.core.errors import ConfigError

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "Section",
    "SweepConfig",
    "format_validation_error",
    "merge_tables",
    "parse_overrides",
    "read_toml",
    "set_dotted",
    "validate_config",
]


class Section(BaseModel):
    """A config table: unknown keys are errors, types are strict (a string or a boolean is never
    read as a number; an integer is accepted where a float is expected), and floats are finite
    (``inf`` and ``nan`` are refused naming the key)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False, strict=True, allow_inf_nan=False)


class SweepConfig(Section):
    """``[sweep]``: a grid of runs of the same study, one zarr store.

    Dotted keys directly in ``[sweep]`` (``"algorithm.batch_fraction" = [0.1, 0.2, 0.5]``) form a
    Cartesian product (one store dimension each, named by the key); the ``[sweep.zip]`` table holds
    lists of equal length varied together (one dimension ``zip``). Any key of the study's config
    can be an axis except ``name``, ``description`` and ``sweep`` itself; each point is validated
    as an ordinary config.
    """

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: dict[str, list[Any]] = Field(default_factory=dict)
    points_per_task: int = Field(8, ge=1, description="points of equal structure run in one task, in [1, inf)")

    @model_validator(mode="before")
    @classmethod
    def _dotted_keys_are_grid_axes(cls, data):
        if isinstance(data, dict):
            data = dict(data)
            grid = data.pop("grid", {}) or {}
            if not isinstance(grid, dict):
                raise ValueError(f"sweep.grid must be a table of dotted keys (got {grid!r})")
            grid = dict(grid)
            for key in [k for k in data if "." in k]:
                grid[key] = data.pop(key)
            data["grid"] = grid
        return data

    @model_validator(mode="after")
    def _check_axes(self):
        if not self.grid and not self.zip:
            raise ValueError('a sweep needs at least one axis, e.g. "algorithm.batch_fraction" = [0.1, 0.5]')
        lengths = {len(v) for v in self.zip.values()}
        if len(lengths) > 1:
            raise ValueError(f"zip lists must have equal lengths (got {sorted(lengths)})")
        for key, values in list(self.grid.items()) + list(self.zip.items()):
            if not isinstance(values, list) or not values:
                raise ValueError(f"sweep axis {key!r} needs a non-empty list of values")
        if set(self.grid) & set(self.zip):
            raise ValueError(f"keys both in the grid and in zip: {sorted(set(self.grid) & set(self.zip))}")
        return self

    @property
    def axes(self) -> list[str]:
        """Every swept key (grid first, then zip)."""
        return list(self.grid) + list(self.zip)


def _field_model(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    """The section model of ``model.key`` if that field is a config section, else ``None``."""
    ann = model.model_fields[key].annotation
    for cand in (ann, *getattr(ann, "__args__", ())):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def has_key(model: type[BaseModel], dotted: str) -> bool:
    """Whether ``dotted`` (``section.key``, any depth) names a field of ``model``."""
    head, _, rest = dotted.partition(".")
    if head not in model.model_fields:
        return False
    if not rest:
        return True
    sub = _field_model(model, head)
    return sub is not None and has_key(sub, rest)


class ExperimentConfig(Section):
    """The top of every study's config: ``name``, ``description``, optional ``[sweep]``.

    ``name`` names the outputs (``OUT/NAME.zarr``, ``OUT/NAME.png``).
    """

    name: str = "default"
    description: str = ""
    sweep: SweepConfig | None = None

    #: keys that a sweep may not vary (besides name, description, sweep); set by a wing
    #: keys a sweep may not vary, with the reason printed in the error; set by a wing
    fixed_keys: ClassVar[dict[str, str]] = {}

    @field_validator("name")
    @classmethod
    def _plain_file_name(cls, v: str) -> str:
        if not v or v.startswith(".") or any(c in v for c in "/\\\0") or len(v) > 200:
            raise ValueError(f"name={v!r} names the output files OUT/NAME.zarr: a plain file name (no '/', '\\', leading '.'), 1-200 characters")
        return v

    @model_validator(mode="after")
    def _sweep_axes_are_keys(self):
        if self.sweep is not None:
            for key in self.sweep.axes:
                if key.split(".")[0] in ("name", "description", "sweep") or not has_key(type(self), key):
                    raise ValueError(f"sweep axis {key!r} is not a config key of this study (use section.key)")
                if key in self.fixed_keys:
                    why = self.fixed_keys[key] if isinstance(self.fixed_keys, dict) else ""
                    raise ValueError(f"sweep: {key} cannot be a sweep axis" + (f" ({why})" if why else ""))
        return self

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) of the resolved config."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def config_hash(self) -> str:
        """Short hash of the canonical JSON: identifies a result."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]


def format_validation_error(err: ValidationError) -> str:
    """One line per problem of a pydantic error, each naming the key in full."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        if e["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown key (not a config key of this section)")
        elif isinstance(got, (int, float, str)) and not isinstance(got, bool):
            lines.append(f"{loc or 'config'}: {msg} (got {got!r})")
        else:
            lines.append(f"{loc or 'config'}: {msg}")
    return "invalid config:\n  " + "\n  ".join(lines)


def read_toml(path: str | Path) -> dict[str, Any]:
    """The table of a TOML config file, with ``name`` defaulting to the file's stem.

    Raises :class:`ConfigError` for a missing file or invalid TOML.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    data.setdefault("name", path.stem)
    return data


def merge_tables(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Merge the nested table ``extra`` into ``base`` (in place, ``extra`` wins); returns ``base``."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_tables(base[key], value)
        else:
            base[key] = value
    return base


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """``tree[a][b][c] = value`` for ``dotted = "a.b.c"`` (creating tables on the way)."""
    *parents, last = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[last] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["algorithm.eta=0.05", ...]`` -> nested dict; values are read as TOML values, and a value
    that is not TOML (``loss=logistic``) as a string. Raises :class:`ConfigError` for an item
    without ``=``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is not KEY=VALUE (e.g. algorithm.eta=0.05)")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        set_dotted(out, key.strip(), value)
    return out


M = TypeVar("M", bound=BaseModel)


def validate_config(model: type[M], source: M | dict[str, Any] | str | Path) -> M:
    """Validate ``source`` (an instance of ``model``, a dict of TOML keys or a TOML path) as
    ``model``; every config type of sgdlab is loaded through here.

    Raises :class:`ConfigError` with one line per problem, each naming the key.
    """
    if isinstance(source, model):
        return source
    if isinstance(source, (str, Path)):
        source = read_toml(source)
    if not isinstance(source, dict):
        raise ConfigError(f"a config is a dict, a TOML path or a {model.__name__}; got {type(source).__name__}")
    try:
        return model.model_validate(source)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    except (ArithmeticError, TypeError, KeyError, IndexError) as err:  # a value a check could not handle
        raise ConfigError(f"invalid config: a value is out of the range the checks can handle ({type(err).__name__}: {err})") from None
