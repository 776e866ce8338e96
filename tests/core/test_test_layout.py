"""The test folders are not packages, so pytest imports each test file by its basename: two files
with one name in two folders collide ("import file mismatch") whenever one pytest process collects
both. This keeps every basename unique, for one-process and distributed runs alike."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique():
    names = Counter(p.name for p in TESTS.rglob("*.py") if p.name != "conftest.py" and "__pycache__" not in p.parts)
    clashes = sorted(name for name, count in names.items() if count > 1)
    assert not clashes, f"test modules sharing a basename (rename one of each): {clashes}"
