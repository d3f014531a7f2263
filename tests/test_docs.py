"""README.md, experiments/README.md and docs/: every relative link resolves, and the README keeps its two commands first."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target)
PAGES = [ROOT / "README.md", ROOT / "experiments" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def relative_links(page: Path) -> list[str]:
    """The link targets of a Markdown page that point into the repository (no URL, no anchor-only)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # links in code blocks are not links
    targets = [m.group(1).split("#")[0] for m in LINK.finditer(text)]
    return [t for t in targets if t and not re.match(r"[a-z]+:", t)]


def test_the_link_pattern_finds_relative_links_only(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("[a](docs/x.md#s) [b](https://e.org) [c](#top)\n```\n[d](in_code.md)\n```\n")
    assert relative_links(page) == ["docs/x.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    missing = [t for t in relative_links(page) if not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)}: links to missing {missing}"


def test_readme_starts_with_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[2] == "```bash"
    assert lines[3].endswith(".venv/bin/vjepa pretrain")
    assert lines[4].endswith(".venv/bin/python -m pytest")
