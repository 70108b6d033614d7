"""The docs stay true to the code they describe: every test the security page names exists, so a promise it lists
is one a test holds the server to."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_the_security_page_names_exists():
    page = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    named, current = [], None
    for ref in re.findall(r"`((?:test_\w+\.py)(?:::test_\w+)?|::test_\w+)`", page):
        if ref.startswith("::"):  # `::test_x` goes on naming tests of the file named just before it
            named.append((current, ref[2:]))
        else:
            current, _, test = ref.partition("::")
            named.append((current, test or None))
    assert len(named) > 30, "the security page names fewer tests than it should; was it rewritten?"
    missing = [
        f"{file}::{test}"
        for file, test in named
        if not (ROOT / "tests" / file).is_file()
        or (test and not re.search(rf"^(async )?def {test}\(", (ROOT / "tests" / file).read_text(), re.M))
    ]
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"
