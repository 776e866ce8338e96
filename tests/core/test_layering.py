"""The layer rules of the package, read from the imports (AST) of every module.

- ``sgdlab.core`` imports no wing;
- a wing (``dmft``, ``sde``, ``manifold``, ``two_layer``) imports no other wing;
- inside a wing, every module has a role: ``model`` (the problem: data, losses, noise models),
  ``simulator`` (the finite-size dynamics), ``theory`` (solvers of the limit equations) or
  ``study`` (config, experiment, plot, command: what puts simulation and theory side by side);
  a model imports neither simulators nor theories, a theory never imports a simulator and a
  simulator never imports a theory. A new module must be given a role here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sgdlab

ROOT = Path(sgdlab.__file__).parent
WINGS = ("dmft", "sde", "manifold", "two_layer")

#: wing -> role -> module names (without .py). The studies are what is left: they may import anything.
ROLES = {
    "dmft": {
        "model": {"problem", "losses", "batch_mask", "update", "steps"},
        "simulator": {"simulation", "noise_sim", "products"},
        "theory": {"solver", "dynamics", "weight_side", "effective", "march", "replicas", "fdt"},
        "study": {"__init__", "config", "experiment", "noise", "noise_plot", "plot", "command"},
    },
    "sde": {
        # models.py holds the compared dynamics as data (SGD's SVAG variant and the SDEs' drift and
        # diffusion formulas), what both the SGD simulator and the SDE solvers read
        "model": {"problems", "observables", "network", "models"},
        "simulator": {"sgd"},
        "theory": {"moments", "solvers", "mean_field"},
        "study": {"__init__", "config", "experiment", "weak_error", "plot", "command"},
    },
    "manifold": {
        "model": {"models", "injections", "user_noise"},
        "simulator": {"noise"},
        "theory": {"limit", "spectral", "geometry", "integrators"},
        "study": {"__init__", "config", "experiment", "plot", "command"},
    },
    "two_layer": {
        "model": {"problem"},
        "simulator": {"sgd"},
        "theory": {"flow", "committee_ode", "analysis", "reduced"},
        "study": {"__init__", "config", "experiment", "scans", "plot", "command"},
    },
}
FORBIDDEN = {"model": {"simulator", "theory"}, "theory": {"simulator"}, "simulator": {"theory"}}


def imports_of(path: Path) -> set[str]:
    """Every ``sgdlab...`` module that ``path`` imports (at any depth of the file, absolute names)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("sgdlab"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sgdlab") and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)  # `from sgdlab.dmft import solver`
    return out


def modules(folder: Path):
    return sorted(p for p in folder.rglob("*.py"))


def test_core_imports_no_wing():
    bad = [(p.name, m) for p in modules(ROOT / "core") for m in imports_of(p) if m.split(".")[1:2] and m.split(".")[1] in WINGS]
    assert not bad, f"core must not import a wing: {bad}"


@pytest.mark.parametrize("wing", WINGS)
def test_a_wing_imports_no_other_wing(wing):
    others = set(WINGS) - {wing}
    bad = [(p.name, m) for p in modules(ROOT / wing) for m in imports_of(p) if len(m.split(".")) > 1 and m.split(".")[1] in others]
    assert not bad, f"{wing} imports another wing: {bad}"


@pytest.mark.parametrize("wing", WINGS)
def test_every_module_has_a_role_and_keeps_to_it(wing):
    roles = ROLES[wing]
    role_of = {name: role for role, names in roles.items() for name in names}
    files = {p.stem: p for p in modules(ROOT / wing)}
    unclassified = sorted(set(files) - set(role_of))
    assert not unclassified, f"give these {wing} modules a role in tests/core/test_layering.py: {unclassified}"
    bad: set[str] = set()
    for name, path in files.items():
        for target in imports_of(path):
            parts = target.split(".")
            if len(parts) >= 3 and parts[1] == wing and parts[2] in role_of:
                if role_of[parts[2]] in FORBIDDEN.get(role_of[name], set()):
                    bad.add(f"{wing}.{name} ({role_of[name]}) imports {wing}.{parts[2]} ({role_of[parts[2]]})")
    assert not bad, "\n".join(sorted(bad))


def test_the_rule_can_fail(tmp_path):
    """The reader sees the imports the rules are about (a rule that reads nothing cannot fail)."""
    f = tmp_path / "m.py"
    f.write_text("from sgdlab.dmft import simulation as s\nimport sgdlab.sde.sgd\nfrom sgdlab.core.store import save\n")
    assert {"sgdlab.dmft.simulation", "sgdlab.sde.sgd", "sgdlab.core.store"} <= imports_of(f)
    assert "sgdlab.dmft.simulation" in imports_of(ROOT / "dmft" / "experiment.py") or "sgdlab.dmft.simulation.batched" in imports_of(ROOT / "dmft" / "experiment.py")
