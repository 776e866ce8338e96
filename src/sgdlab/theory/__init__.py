"""Theory solvers: pure functions of (parameters, grid). They may use ``problems`` but never ``algorithms``."""
