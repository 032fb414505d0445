"""Two recipes field by field, and the table of differences this project allows, each with its reason.

The table is the one in `docs/reproduction.md` headed "Allowed differences" (the page a user reads is the
list the test checks against, so neither can go stale alone). Each row:

    | `field` | `recipes` | `here` | `MMSegmentation` | why |

`field` and `recipes` are shell patterns (`schedule.*`, `segformer_*`, `*`); `here` and `MMSegmentation` are
the two values as JSON (or `*` for any). A difference is allowed when a row matches all four.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ABSENT = "(absent)"
TABLE_HEADING = "## Allowed differences"
REPRODUCTION_DOC = Path(__file__).resolve().parents[2] / "docs" / "reproduction.md"


@dataclass(frozen=True)
class Difference:
    field: str
    ours: Any
    theirs: Any

    def __str__(self) -> str:
        return f"{self.field}: {show(self.ours)} here, {show(self.theirs)} in MMSegmentation"


@dataclass(frozen=True)
class AllowedDifference:
    field: str
    recipes: str
    ours: str
    theirs: str
    why: str

    def allows(self, recipe: str, diff: Difference) -> bool:
        return (
            fnmatch.fnmatchcase(diff.field, self.field)
            and fnmatch.fnmatchcase(recipe, self.recipes)
            and _value_matches(self.ours, diff.ours)
            and _value_matches(self.theirs, diff.theirs)
        )


def show(value: Any) -> str:
    return value if value == ABSENT else json.dumps(value)


def differences(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[Difference]:
    """Every field whose values differ (numbers compared with a relative tolerance of 1e-9), in field order;
    a field one side lacks is `(absent)` there."""
    out = []
    for field in sorted(set(ours) | set(theirs)):
        a, b = ours.get(field, ABSENT), theirs.get(field, ABSENT)
        if not _same(a, b):
            out.append(Difference(field, a, b))
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-300)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _value_matches(pattern: str, value: Any) -> bool:
    if pattern == "*":
        return True
    if pattern == ABSENT:
        return value == ABSENT
    try:
        return _same(json.loads(pattern), value)
    except json.JSONDecodeError:
        return False


def read_allowed(path: str | Path = REPRODUCTION_DOC) -> list[AllowedDifference]:
    """The rows of the "Allowed differences" table of `path` (ValueError naming the line of a malformed row)."""
    lines = Path(path).read_text().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == TABLE_HEADING)
    except StopIteration:
        raise ValueError(f"{path}: no '{TABLE_HEADING}' section") from None
    rows: list[AllowedDifference] = []
    in_table = False
    for number, line in enumerate(lines[start + 1 :], start + 2):
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            if in_table:
                break
            continue
        in_table = True
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if all(set(c) <= set("-: ") for c in cells) or cells[0].lower() == "field":
            continue
        if len(cells) != 5:
            raise ValueError(f"{path}:{number}: expected 5 cells (field, recipes, here, MMSegmentation, why)")
        field, recipes, ours, theirs = (_code(c, path, number) for c in cells[:4])
        rows.append(AllowedDifference(field, recipes, ours, theirs, cells[4]))
    return rows


def _code(cell: str, path: str | Path, number: int) -> str:
    if not (cell.startswith("`") and cell.endswith("`")):
        raise ValueError(
            f"{path}:{number}: '{cell}' is not in backticks (field, recipes and values are code)"
        )
    return cell[1:-1].replace("\\|", "|")


def unexplained(
    recipe: str, diffs: Iterable[Difference], allowed: Iterable[AllowedDifference]
) -> list[Difference]:
    """The differences of `recipe` that no row of the table allows."""
    allowed = list(allowed)
    return [d for d in diffs if not any(row.allows(recipe, d) for row in allowed)]
