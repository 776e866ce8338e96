import sgdlab  # noqa: F401  (enables float64 before any test imports JAX code)
