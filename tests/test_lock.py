"""The two locks agree with pyproject.toml: requirements.lock (the runtime set `make train` installs) pins every
dependency of the project, requirements-dev.lock (`make test`, `make docs`) also those of the dev and docs extras,
each at a version its range allows, the two at the same version wherever both pin a package, and neither carries a
machine's index or wheel folder; the runtime set holds none of the dev tools.

A dependency added to pyproject.toml without `make lock` fails here, before `make install` on another machine would
install an environment without it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
DEV_EXTRAS = ("dev", "docs")  # what `make lock` compiles into the dev lock (its --extra options)


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


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_runtime_lock_pins_every_dependency_and_no_dev_tool():
    if not LOCK.exists():
        pytest.skip("no requirements.lock: make install resolves pyproject.toml's ranges")
    pins = read_pins(LOCK.read_text())
    problems = unpinned(list(_project()["dependencies"]), pins)
    assert not problems, (
        "requirements.lock is behind pyproject.toml; run `make lock` and commit the locks:\n  "
        + "\n  ".join(problems)
    )
    dev_only = [
        Requirement(r).name for extra in DEV_EXTRAS for r in _project()["optional-dependencies"][extra]
    ]
    assert not [name for name in dev_only if canonicalize_name(name) in pins], "dev tools in the runtime lock"


def test_dev_lock_pins_every_dependency_and_extra_at_the_runtime_versions():
    if not DEV_LOCK.exists():
        pytest.skip("no requirements-dev.lock")
    project = _project()
    requirements = list(project["dependencies"])
    for extra in DEV_EXTRAS:
        requirements += project["optional-dependencies"][extra]
    dev = read_pins(DEV_LOCK.read_text())
    problems = unpinned(requirements, dev)
    assert not problems, "requirements-dev.lock is behind pyproject.toml; run `make lock`:\n  " + "\n  ".join(
        problems
    )
    runtime = read_pins(LOCK.read_text())
    assert {k: v for k, v in runtime.items() if dev.get(k) != v} == {}, "the two locks pin different versions"


@pytest.mark.parametrize("lock", [LOCK, DEV_LOCK], ids=lambda p: p.name)
def test_lock_names_no_machine_paths(lock):
    if not lock.exists():
        pytest.skip(f"no {lock.name}")
    options = [line for line in lock.read_text().splitlines() if line.startswith("-")]
    assert not options, f"{lock.name} carries pip options of the machine that wrote it: {options}"
    assert "file://" not in lock.read_text()
