"""The docs site builds with warnings as errors, and every page of its navigation exists.

`mkdocs build --strict` (what `make docs` runs) fails on a link to a missing page or anchor and on a page in docs/
that the navigation leaves out (mkdocs.yml's `validation`), so this test catches a broken docs page in `make test`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def nav_pages(nav: list) -> list[str]:
    """The Markdown files named in mkdocs.yml's `nav` (nested sections flattened; external URLs left out)."""
    pages: list[str] = []
    for entry in nav:
        items = entry.values() if isinstance(entry, dict) else [entry]
        for item in items:
            if isinstance(item, list):
                pages += nav_pages(item)
            elif not re.match(r"^[a-z]+://", str(item)):
                pages.append(str(item))
    return pages


def load_nav() -> list[str]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return nav_pages(config["nav"])


def test_nav_flattening_keeps_nested_pages_and_drops_urls():
    nav = [{"Home": "index.md"}, {"Part": [{"A": "a.md"}, "b.md"]}, {"Ext": "https://example.org"}]
    assert nav_pages(nav) == ["index.md", "a.md", "b.md"]


def test_every_nav_page_exists():
    pages = load_nav()
    assert pages, "mkdocs.yml has an empty nav"
    missing = [p for p in pages if not (DOCS / p).is_file()]
    assert not missing, f"mkdocs.yml's nav lists pages that are not in docs/: {missing}"
    assert len(set(pages)) == len(pages), f"a page is listed twice in mkdocs.yml's nav: {pages}"


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
        + ["--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed (run `make docs`):\n{proc.stderr[-3000:]}"
    for page in load_nav():
        stem = page[: -len(".md")]
        html = site / "index.html" if stem == "index" else site / stem / "index.html"
        assert html.is_file(), f"docs/{page} is in the nav but {html.relative_to(site)} was not built"
    # the README's picture lives in docs/images and is part of the site too
    assert (site / "images" / "inference_example.png").is_file()


def test_readme_is_short_and_starts_with_the_two_commands():
    """The README keeps the two setup commands first, one picture, features and links; the reference is in docs/."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 150, f"README.md has {len(lines)} lines: move reference material into docs/ (max 149)"
    first_code = lines.index("```bash")
    assert lines[first_code + 1].startswith("make train") and lines[first_code + 2].startswith("make test")
    assert first_code < 5, "README.md should start with the make train / make test block"


def test_readme_links_into_docs_exist():
    """Relative links of README.md (to docs pages and pictures) point at files that exist."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(((?!https?://|#)[^)\s]+)\)", readme)
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_the_iterations_quoted_for_make_train_are_the_configs():
    """Wherever the README, a docs page or the notebook speaks of `make train`, an "N iterations" close by is the
    number `experiment=fcn_shapes` trains (not "every N iterations", nor a history "from N to M iterations")."""
    import json

    from src.recipes.targets import compose_train

    steps = int(compose_train(["experiment=fcn_shapes"]).schedule.max_steps)
    texts = {p.name: p.read_text() for p in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]}
    notebook = json.loads((ROOT / "notebooks" / "tutorial.ipynb").read_text())
    texts["tutorial.ipynb"] = "\n".join("".join(c["source"]) for c in notebook["cells"])
    quoted = []
    for name, text in texts.items():
        text = re.sub(r"\s+", " ", text)
        for mention in re.finditer(r"make train", text):
            window = text[max(0, mention.start() - 150) : mention.end() + 250]
            quoted += [(name, int(n)) for n in re.findall(r"(?<!every )(?<!from )\b(\d+) iterations", window)]
    assert quoted, "no page quotes the iterations of make train"
    assert [q for q in quoted if q[1] != steps] == [], f"make train runs {steps} iterations"
