"""requirements.lock agrees with pyproject.toml: every dependency of the project and of its dev and docs extras is
pinned there at a version its range allows, and the lock carries no machine's index or wheel folder.

A dependency added to pyproject.toml without `make lock` fails here, before `make install` on another machine would
install an environment without it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
LOCKED_EXTRAS = ("dev", "docs")  # what `make lock` compiles (its --extra options)


def read_pins(text: str) -> dict[str, str]:
    """`name==version` lines of a pip-compile output, by canonical name (comments and options skipped)."""
    pins = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)", line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(3)
    return pins


def unpinned(requirements: list[str], pins: dict[str, str]) -> list[str]:
    """The requirements (of this platform: markers evaluated) that the pins leave out or pin outside the range."""
    problems = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req}: not in requirements.lock")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req}: requirements.lock pins {version}")
    return problems


def test_read_pins_and_unpinned_catch_a_missing_and_an_outdated_pin():
    pins = read_pins("# header\ntorch==2.14.1\n    # via x\nFoo_Bar==1.0\n--find-links x\n")
    assert pins == {"torch": "2.14.1", "foo-bar": "1.0"}
    assert unpinned(["torch>=2.4", "foo.bar>=1.0"], pins) == []
    assert unpinned(["torch>=2.15", "numpy"], pins) == [
        "torch>=2.15: requirements.lock pins 2.14.1",
        "numpy: not in requirements.lock",
    ]


def test_lock_pins_every_dependency_of_pyproject():
    if not LOCK.exists():
        pytest.skip("no requirements.lock: make install resolves pyproject.toml's ranges")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in LOCKED_EXTRAS:
        requirements += project["optional-dependencies"][extra]
    problems = unpinned(requirements, read_pins(LOCK.read_text()))
    assert not problems, (
        "requirements.lock is behind pyproject.toml; run `make lock` and commit requirements.lock:\n  "
        + "\n  ".join(problems)
    )


def test_lock_names_no_machine_paths():
    if not LOCK.exists():
        pytest.skip("no requirements.lock")
    options = [line for line in LOCK.read_text().splitlines() if line.startswith("-")]
    assert not options, f"requirements.lock carries pip options of the machine that wrote it: {options}"
    assert "file://" not in LOCK.read_text()
