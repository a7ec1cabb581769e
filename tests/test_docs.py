"""The generated docs (loss pages, loss index, README table, mkdocs nav) are in sync with the registry."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mithril_losses as mlo
from mithril_losses import _docgen

ROOT = Path(__file__).resolve().parent.parent


def test_generated_docs_are_in_sync_with_the_registry():
    problems = _docgen.stale(ROOT)
    assert not problems, (
        "generated docs are stale; run `python -m mithril_losses._docgen` and commit the result:\n  "
        + "\n  ".join(problems)
    )


def test_check_command_exits_zero_when_in_sync():
    proc = subprocess.run([sys.executable, "-m", "mithril_losses._docgen", "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", mlo.available())
def test_every_loss_has_a_page(name):
    page = ROOT / "docs" / "losses" / f"{name}.md"
    assert page.is_file(), f"no reference page for {name!r}"
    text = page.read_text(encoding="utf-8")
    spec = mlo.spec(name)
    assert text.startswith(_docgen.GENERATED)
    assert f"# `{name}`" in text
    assert spec.formula.strip() in text and spec.gradient.strip() in text
    for fname in spec.functional_names:
        assert f"mlo.{fname}_gradient" in text
    index = (ROOT / "docs" / "losses" / "index.md").read_text(encoding="utf-8")
    assert f"]({name}.md)" in index
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"](docs/losses/{name}.md)" in readme
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert f"losses/{name}.md" in nav


def _copy_tree(tmp_path):
    for rel in ("README.md", "mkdocs.yml"):
        shutil.copy(ROOT / rel, tmp_path / rel)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    return tmp_path


def test_check_names_a_stale_readme_table_and_write_repairs_it(tmp_path):
    root = _copy_tree(tmp_path)
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    readme.write_text(text.replace("](docs/losses/mse.md)", "](docs/losses/mse_old.md)"), encoding="utf-8")
    assert _docgen.stale(root) == ["README.md: out of date"]
    proc = subprocess.run([sys.executable, "-m", "mithril_losses._docgen", "--check", "--root", str(root)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "README.md" in proc.stderr
    _docgen.write(root)
    assert _docgen.stale(root) == []
    assert readme.read_text(encoding="utf-8") == text


def test_check_finds_missing_edited_and_orphaned_pages(tmp_path):
    root = _copy_tree(tmp_path)
    (root / "docs/losses/huber.md").unlink()
    mse = root / "docs/losses/mse.md"
    mse.write_text(mse.read_text(encoding="utf-8") + "\nhand edit\n", encoding="utf-8")
    (root / "docs/losses/retired.md").write_text(_docgen.GENERATED + "\n# `retired`\n", encoding="utf-8")
    problems = _docgen.stale(root)
    assert "docs/losses/huber.md: missing" in problems
    assert "docs/losses/mse.md: out of date" in problems
    assert any(p.startswith("docs/losses/retired.md") for p in problems)
    _docgen.write(root)
    assert _docgen.stale(root) == []
    assert not (root / "docs/losses/retired.md").exists()


def test_readme_has_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install -c .ci/constraints.txt -e ".[all,test]" && mithril-losses conformance' in readme
    assert "python -m pytest -q" in readme


def test_reference_names_are_found_for_torch_and_optax():
    assert _docgen.reference_name(mlo.spec("mse"), "torch") == "torch.nn.functional.mse_loss"
    assert _docgen.reference_name(mlo.spec("huber"), "optax") == "optax.losses.huber_loss"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
                    reason="mkdocs-material is not installed (the docs extra)")
def test_mkdocs_build_strict(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "losses" / "huber" / "index.html").is_file()
