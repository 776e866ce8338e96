"""What `import sgdlab` sets in JAX: float64 and the compilation cache (moved or switched off by
SGDLAB_JAX_CACHE); and nothing in matplotlib."""

import os
import subprocess
import sys

PROBE = (
    "import sys, matplotlib, jax; b = matplotlib.rcParams._get_backend_or_none(); import sgdlab; "
    "print(jax.config.jax_enable_x64, jax.config.jax_compilation_cache_dir, "
    "matplotlib.rcParams._get_backend_or_none() == b, 'matplotlib.pyplot' in sys.modules)"
)


def probe(**env) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_cache_folder_moved_and_switched_off(tmp_path):
    assert probe(SGDLAB_JAX_CACHE=str(tmp_path / "c")) == ["True", str(tmp_path / "c"), "True", "False"]
    assert (tmp_path / "c").is_dir()
    assert probe(SGDLAB_JAX_CACHE="off") == ["True", "None", "True", "False"]


PROBE_LAZY = (
    "import importlib.util, os, sys, sgdlab; lazy = 'jax' not in sys.modules; import sgdlab.cli; cli = 'jax' not in sys.modules; "
    "importlib.util.find_spec('jax'); "  # a library probing for JAX does not use up the hook
    "import jax, jax.numpy as jnp; "
    "print(lazy, cli, jax.config.jax_enable_x64, jax.config.jax_compilation_cache_dir, jnp.ones(1).dtype, "
    "'JAX_ENABLE_X64' in os.environ, 'JAX_COMPILATION_CACHE_DIR' in os.environ)"
)


def test_import_sgdlab_does_not_import_jax_and_configures_it_when_imported(tmp_path):
    """`import sgdlab` (and the command line's module) leave JAX unimported; the first `import jax`
    after it gets float64 and the cache, without sgdlab touching the environment of child processes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    run = lambda **e: subprocess.run([sys.executable, "-c", PROBE_LAZY], env={**env, **e}, capture_output=True, text=True, check=True).stdout.split()  # noqa: E731
    assert run(SGDLAB_JAX_CACHE=str(tmp_path / "c")) == ["True", "True", "True", str(tmp_path / "c"), "float64", "False", "False"]
    assert run(SGDLAB_JAX_CACHE="off") == ["True", "True", "True", "None", "float64", "False", "False"]


def test_lazy_names_of_the_package():
    import sgdlab

    assert sgdlab.run is sgdlab.dmft.experiment.run
    assert sgdlab.Config is sgdlab.dmft.config.Config
    assert callable(sgdlab.core.store.save)
    assert set(sgdlab.__all__) <= set(dir(sgdlab))


PROBE_STUDIES = (
    "import sys, pickle, sgdlab.cli as cli; "
    "studies = [cli._study(c) for c in cli.STUDIES]; "
    "print('matplotlib' in sys.modules, all(callable(s.figures) and callable(s.table) for s in studies), "
    "pickle.loads(pickle.dumps(studies[2].figures)) == studies[2].figures)"
)


def test_a_study_imports_matplotlib_only_to_draw():
    """Every command's study names its figures (and tables) as "module:attr", imported at the first
    call: a run with --no-plot never imports matplotlib; the lazy reference pickles (sweep workers)."""
    out = subprocess.run([sys.executable, "-c", PROBE_STUDIES], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"]
