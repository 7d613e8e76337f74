"""The docs cannot rot silently: links resolve, named commands exist.

Every relative link in README.md and docs/**/*.md must point to an existing file
or folder and, for a ``#anchor``, to a heading of the target as GitHub names it.
Every ``ferry COMMAND`` in a fenced code block or an inline code span must be a
command ``ferry --help`` lists.
"""

from __future__ import annotations

import contextlib
import io
import re
import unicodedata
from pathlib import Path

import pytest

from ferry.planner import cli

ROOT = Path(__file__).resolve().parent.parent


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


_FENCE = re.compile(r"^(\s*)(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"""<a\s+(?:name|id)=["']([^"']+)["']""")


def split_code(text: str) -> tuple[list[str], list[str]]:
    """The lines outside fenced code blocks, and the lines inside."""
    prose: list[str] = []
    code: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(2)
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            else:
                code.append(line)
            continue
        prose.append(line)
    return prose, code


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading (before the -1, -2 of duplicates)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "")
    text = re.sub(r"(\*\*|__|\*)(.+?)\1", r"\2", text)  # emphasis markers
    text = text.strip().lower()
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "-_" or cat[0] in "LN" or cat == "Mn":
            out.append(ch)
        elif ch == " ":
            out.append("-")
    return "".join(out)


def anchors(path: Path) -> set[str]:
    prose, _ = split_code(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        found.update(_HTML_ANCHOR.findall(line))
    for line in prose:
        m = _HEADING.match(line)
        if not m:
            continue
        base = github_anchor(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(path: Path) -> list[str]:
    """Each relative link of the Markdown file *path* that does not resolve."""
    prose, _ = split_code(path.read_text(encoding="utf-8"))
    targets: list[str] = []
    for line in prose:
        line = _INLINE_CODE.sub("", line)
        targets += _LINK.findall(line)
        m = _REFDEF.match(line)
        if m:
            targets.append(m.group(1))
    bad = []
    for target in targets:
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{path.name}: {target}: no such file")
            continue
        if anchor and dest.is_file() and dest.suffix == ".md" and anchor not in anchors(dest):
            where = dest.relative_to(dest.parent.parent)
            bad.append(f"{path.name}: {target}: no such heading in {where}")
    return bad


def ferry_commands() -> set[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.main(["--help"])
    text = out.getvalue()
    block = text.split("positional arguments:", 1)[1].split("options:", 1)[0]
    return set(re.findall(r"^ {4}([a-z][a-z-]*)", block, re.M))


_FERRY_CMD = re.compile(r"(?:^|[\s;|&(`$])ferry\s+([a-z][a-z_-]*)")


def named_commands(path: Path) -> set[str]:
    """The ``ferry COMMAND`` names in code blocks and in inline code spans."""
    prose, code = split_code(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for line in code:
        line = line.split(" # ", 1)[0]  # a shell comment is prose
        if line.lstrip().startswith("#"):
            continue
        names.update(_FERRY_CMD.findall(line))
    for line in prose:
        for span in re.findall(r"`([^`]+)`", line):
            names.update(_FERRY_CMD.findall(" " + span))
    return names


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    assert broken_links(doc) == []


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_name_real_commands(doc: Path) -> None:
    assert named_commands(doc) <= ferry_commands()


def test_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other doc\n\n## `ferry worker`: the job wrapper\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n\n## Title\n\n"
        "[ok](other.md) [ok](other.md#other-doc) [ok](other.md#ferry-worker-the-job-wrapper)\n"
        "[ok](#title-1) [ok](https://example.org/x.md) `[not a link](gone.md)`\n"
        "[bad](missing.md) [bad](other.md#nothing-here) [bad](#title-2)\n"
        "```\n[in code](gone.md)\n```\n"
    )
    assert broken_links(doc) == [
        "doc.md: missing.md: no such file",
        f"doc.md: other.md#nothing-here: no such heading in {tmp_path.name}/other.md",
        f"doc.md: #title-2: no such heading in {tmp_path.name}/doc.md",
    ]


def test_checker_finds_unknown_commands(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "Run `ferry statistics r` or `ferry stats r`; ferry writes it.\n"
        "```sh\nferry plan w.yml --dir r\nferry frobnicate r  # ferry wrote\n```\n"
    )
    assert named_commands(doc) - ferry_commands() == {"frobnicate", "stats"}


def test_github_anchor_rules() -> None:
    assert github_anchor("bench_worker.py: the worker's own overhead") == (
        "bench_workerpy-the-workers-own-overhead"
    )
    assert github_anchor("`ferry transfer` -- options & exit codes") == (
        "ferry-transfer----options--exit-codes"
    )
