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
