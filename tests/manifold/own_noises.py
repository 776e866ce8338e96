"""User noise factories for the tests of ``noise.name`` as a callable or an import string
(the tests put this folder on ``sys.path`` and use ``own_noises:NAME``)."""

import jax
import jax.numpy as jnp
import numpy as np

from sgdlab.manifold import noise as ni


def my_label_noise(sigma):
    """The built-in label noise, built by the user."""
    return ni.label_noise(sigma)


def loud_label_noise(sigma):
    """Label noise of variance ``4 sigma^2``: correlation ``R = 4 I``, so the degenerate limit of the
    hyperbola, ``C' = -C`` for ``R = I``, becomes ``C' = -4 C``."""
    base = ni.label_noise(sigma)
    return base._replace(name="loud_label_noise", sample=lambda key, s, dtype: 2.0 * base.sample(key, s, dtype),
                         correlation=lambda s: 4.0 * np.eye(s.n_samples))


def label_and_perturbation(sigma):
    """Label noise and a weight perturbation of half the scale at once (a noise no name gives)."""
    return ni.chain(ni.label_noise(sigma), ni.weight_perturbation(sigma / 2))


def wrong_variance(sigma):
    return ni.label_noise(sigma)._replace(correlation=lambda s: 2.0 * np.eye(s.n_samples))


def biased(sigma):
    base = ni.label_noise(sigma)
    return base._replace(sample=lambda key, s, dtype: base.sample(key, s, dtype) + 0.5 * sigma)


def wrong_sigma(sigma):
    return ni.label_noise(2.0 * sigma)


def not_an_injection(sigma):
    return {"sigma": sigma}


def wrong_sample_shape(sigma):
    base = ni.label_noise(sigma)
    return base._replace(sample=lambda key, s, dtype: sigma * jax.random.normal(key, (s.n_samples + 1,), dtype))


def wrong_perturbation(sigma):
    base = ni.label_noise(sigma)
    return base._replace(perturb=lambda pert, zeta, s: pert._replace(label_shift=jnp.zeros(s.n_samples + 2)))


def untraceable(sigma):
    base = ni.label_noise(sigma)
    return base._replace(sample=lambda key, s, dtype: jnp.asarray(np.asarray(jax.random.normal(key, (s.n_samples,)))))


def asymmetric(sigma):
    return ni.label_noise(sigma)._replace(correlation=lambda s: np.eye(s.n_samples) + np.triu(np.ones((s.n_samples,) * 2), 1))


def fails(sigma):
    raise RuntimeError("no noise today")
