"""The documentation site builds with ``mkdocs build --strict`` and not one warning (broken link or
anchor, page missing from the navigation, docstring naming a parameter its signature lacks, ...),
every page of the navigation is rendered, the API reference is generated from the docstrings, and
no page points outside the repository. The citation metadata follow pyproject.toml.

mkdocs, its material theme, mkdocstrings and mkdocs-jupyter are test dependencies (the ``test``
extra): a missing one is a failure, not a skip."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def nav_files(nav) -> list[str]:
    """Every file named in mkdocs.yml's ``nav`` (nested lists of ``{title: file}`` or ``file``)."""
    out = []
    for item in nav:
        values = item.values() if isinstance(item, dict) else [item]
        for v in values:
            out += nav_files(v) if isinstance(v, list) else [v]
    return out


def test_site_builds_strictly_without_warnings(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    log = proc.stdout + proc.stderr
    problems = [line for line in log.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert proc.returncode == 0 and not problems, f"mkdocs build --strict failed:\n{log[-4000:]}"

    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)   # tags are not needed here
    pages = nav_files(config["nav"])
    assert {"claims.md", "glossary.md", "architecture.md", "benchmarks.md", "sweeps.md"} <= set(pages)
    assert sum(p.startswith("gallery/") and p.endswith(".py") for p in pages) == 5
    for page in pages:
        html = site / re.sub(r"\.(md|py)$", ".html", page)
        assert html.is_file() and html.stat().st_size > 0, f"{page} was not rendered"

    # the API reference is generated: every wing's `run` is documented with its signature
    for wing in ("dmft", "sde", "manifold", "two_layer"):
        api = (site / "api" / f"{wing}.html").read_text()
        assert f"sgdlab.{wing}.experiment.run" in api, f"api/{wing}.md shows no sgdlab.{wing}.experiment.run"
    assert "sgdlab.core.store.save" in (site / "api" / "core.html").read_text()
    # docs/api/rst_roles.py turned the docstrings' RST roles into links to the documented objects
    dmft = (site / "api" / "dmft.html").read_text()
    assert ":class:`" not in dmft and ":func:`" not in dmft
    assert re.search(r'<a class="autorefs autorefs-internal"[^>]*href="core\.html#sgdlab\.core\.', dmft)
    # the gallery notebooks are rendered with their code (mkdocs-jupyter, not executed)
    assert "SGDLAB_GALLERY_SMALL" in (site / "gallery" / "sde.html").read_text()


def test_docs_point_only_inside_the_repository():
    texts = {p.relative_to(ROOT): p.read_text() for p in [ROOT / "README.md", *DOCS.rglob("*.md"), *DOCS.rglob("*.py")]}
    outside = re.compile(r"\.\./shared|shared/spec|design\.md|\(\.\./\.\./")
    offenders = {str(p): outside.findall(t) for p, t in texts.items() if outside.search(t)}
    assert not offenders, f"pages point outside the repository: {offenders}"


def test_citation_and_license_follow_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["version"] == project["version"]
    assert cff["license"] == project["license"]["text"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "the sgdlab developers" in (ROOT / "LICENSE").read_text()
    # the works each model implements, by arXiv id, in the metadata, the README and the Cite page
    ids = ["2006.06098", "2112.10852", "2302.07125", "2404.12293", "2303.00055"]
    cited = " ".join(r.get("url", "") + r.get("notes", "") for r in cff["references"])
    for text, where in ((cited, "CITATION.cff"), ((ROOT / "README.md").read_text(), "README.md"),
                        ((DOCS / "cite.md").read_text(), "docs/cite.md")):
        assert all(i in text for i in ids), f"{where} misses one of {ids}"
