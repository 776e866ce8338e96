"""The README's Python snippets run as written (in a temporary folder)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_snippets():
    assert len(python_blocks()) >= 1


def test_readme_python_snippets_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for i, block in enumerate(python_blocks()):
        exec(compile(block, f"README.md python block {i}", "exec"), {"__name__": f"readme_{i}"})
    out = capsys.readouterr().out
    assert "test error at t = 5" in out and "Nesterov, DMFT m = " in out
    assert (tmp_path / "results" / "sgd.zarr").is_dir()


def test_readme_points_only_to_files_inside_the_repository():
    """Every relative link and image of the README names a file of the repository (no ``../``)."""
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert targets, "the README links to no page"
    root = README.parent.resolve()
    for target in targets:
        if re.match(r"[a-z]+://", target):
            continue
        path = (root / target).resolve()
        assert path.is_relative_to(root) and path.exists(), f"README.md links to {target}, not a file of the repository"
    for name in re.findall(r"`((?:docs|src|tests|benchmarks)/[\w./-]+|LICENSE|CITATION\.cff)`", text):
        assert (root / name).exists(), f"README.md names {name}, which does not exist"
