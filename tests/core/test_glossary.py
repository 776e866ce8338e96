"""Every config key the glossary names exists in some study's config (the page cannot go stale),
and the shared names keep one meaning: ``eta`` is a step size, ``alpha`` only n/d."""

import re
from pathlib import Path

from sgdlab.core.config import has_key
from sgdlab.dmft.config import Config
from sgdlab.dmft.noise import NoiseStudyConfig
from sgdlab.manifold.config import ManifoldConfig
from sgdlab.sde.config import SDEConfig
from sgdlab.two_layer.config import TimescalesConfig

MODELS = [Config, NoiseStudyConfig, SDEConfig, ManifoldConfig, TimescalesConfig]
GLOSSARY = Path(__file__).resolve().parents[2] / "docs" / "glossary.md"


def glossary_keys() -> list[str]:
    keys = []
    for row in GLOSSARY.read_text().splitlines():
        if row.startswith("|") and not row.startswith("|---"):
            keys += re.findall(r"`([a-z_]+\.[a-z_]+)`", row.strip("|").split("|")[-1])
    return keys


def test_every_glossary_key_is_a_config_key():
    keys = glossary_keys()
    assert len(keys) > 20
    missing = [k for k in keys if not any(has_key(m, k) for m in MODELS)]
    assert not missing, f"docs/glossary.md names keys no config has: {missing}"


def fields(model, prefix=""):
    from sgdlab.core.config import _field_model

    for name in model.model_fields:
        sub = _field_model(model, name)
        yield from (fields(sub, f"{prefix}{name}.") if sub is not None else [f"{prefix}{name}"])


def test_alpha_is_only_the_sample_ratio():
    keys = {k for m in MODELS for k in fields(m)}
    assert {k for k in keys if k.split(".")[-1] in ("alpha", "alphas")} <= {"problem.alpha"}
    assert not {k for k in keys if k.split(".")[-1] in ("dt", "lr", "learning_rate", "step_size")}
