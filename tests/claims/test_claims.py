"""The claims page cannot go stale.

- fast: ``docs/claims.md`` equals the rendering of the stored records ``claims/results/*.json``
  (the page is generated, never typed), every registered claim has a full-size record, and the
  checker of "numbers agree within their errors" and the order fit can fail;
- slow (one per claim): rerun the claim at the stored size; its verdict must be the stored one and
  every number must agree with the stored one within three combined standard errors (95%
  intervals count as 1.96 standard errors; deterministic numbers to a relative 1e-6).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from claims import PAPERS, REGISTRY
from claims.record import VERDICTS, Claim, Number, fit_order, load
from claims.render import PAGE, render


def test_page_equals_the_rendering_of_the_stored_records():
    assert PAGE.read_text() == render(), "docs/claims.md is stale: run `python -m claims --render`"


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_claim_has_a_full_size_record(name):
    rec = load(name)
    assert rec.name == name and rec.paper == REGISTRY[name][0] and rec.paper in PAPERS
    assert rec.verdict in VERDICTS and rec.why and rec.rule and rec.command and rec.numbers
    assert not rec.small, f"{name} is stored at the small size; rerun `python -m claims {name}`"
    assert Claim.from_json(rec.to_json()) == rec


def test_agreement_checker_can_fail():
    old = Number("x", 1.0, 0.1)
    assert old.agrees_with(Number("x", 1.3, 0.1))[0]           # 2.1 combined s.e.
    assert not old.agrees_with(Number("x", 1.5, 0.1))[0]       # 3.5 combined s.e.
    ci = Number("p", 2.0, low=1.9, high=2.1, kind="ci95")
    assert ci.agrees_with(Number("p", 2.05, low=1.95, high=2.15, kind="ci95"))[0]
    assert not ci.agrees_with(Number("p", 2.4, low=2.3, high=2.5, kind="ci95"))[0]
    ex = Number("e", 0.25, kind="exact")
    assert ex.agrees_with(Number("e", 0.25 * (1 + 1e-9), kind="exact"))[0]
    assert not ex.agrees_with(Number("e", 0.2501, kind="exact"))[0]
    with pytest.raises(ValueError):
        Claim(name="x", paper="p", claim="c", command="c", numbers=[], verdict="maybe", rule="r", why="w")


def test_fit_order_recovers_known_orders():
    x = np.array([0.4, 0.2, 0.1, 0.05])
    for p in (1.0, 2.0):
        est, lo, hi = fit_order(x, 3 * x**p * (1 + 0.01 * np.array([1, -1, 1, -1])))
        assert lo <= p <= hi and hi - lo < 0.2
    est, lo, hi = fit_order(x, 3 * x, se=3 * x * 0.5)         # large Monte-Carlo errors widen the interval
    assert hi - lo > 1.0 and math.isclose(est, 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REGISTRY))
def test_claim_reproduces_its_stored_verdict_and_numbers(name):
    stored = load(name)
    fresh = REGISTRY[name][1](small=False)
    assert fresh.verdict == stored.verdict, f"{name}: verdict {fresh.verdict!r}, stored {stored.verdict!r}: {fresh.why}"
    assert [n.name for n in fresh.numbers] == [n.name for n in stored.numbers]
    bad = [msg for old, new in zip(stored.numbers, fresh.numbers) for ok, msg in [old.agrees_with(new)] if not ok]
    assert not bad, f"{name}: numbers moved beyond their errors: " + "; ".join(bad)
