"""The documentation's `pose6d` command lines parse with the real CLI, and its relative
links point at files that exist.

Every fenced ```bash (or bare ```) block of README.md and docs/*.md is read; each line that
starts with `pose6d ` (after leading whitespace and a `$ ` prompt, with backslash
continuations joined and `# comments` dropped) must be accepted by `build_parser()`. Nothing
is run. Lines holding shell variables (`$D`, `${a}`) cannot be parsed and are skipped.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from pose6d_ros.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in paths]


def code_blocks(text: str) -> list[tuple[int, list[str]]]:
    """`(first line number, lines)` of each fenced block in a shell language (or none)."""
    blocks, current, fence, start = [], None, None, 0
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if current is None:
            if m:
                fence, start = m.group(1), number + 1
                current = [] if m.group(2).lower() in SHELL_LANGS else None
                if current is None:  # another language: skip to its closing fence
                    current = False
        elif m and m.group(1).startswith(fence[0]) and len(m.group(1)) >= len(fence) \
                and not m.group(2):
            if current is not False:
                blocks.append((start, current))
            current, fence = None, None
        elif current is not False:
            current.append(line)
    return blocks


def pose6d_lines(text: str) -> list[tuple[int, str]]:
    """`(line number, command line)` of every `pose6d ...` line in the shell blocks."""
    found = []
    for start, lines in code_blocks(text):
        i = 0
        while i < len(lines):
            first = i
            line = lines[i]
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
            i += 1
            cmd = line.strip()
            if cmd.startswith("$ "):
                cmd = cmd[2:].lstrip()
            if cmd.startswith("pose6d "):
                found.append((start + first, cmd))
    return found


def parse_error(parser, cmd: str) -> str | None:
    """None when `cmd` parses, else why not."""
    try:
        argv = shlex.split(cmd, comments=True)[1:]
    except ValueError as exc:
        return f"cannot split: {exc}"
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as exc:
        return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue() else \
            f"exit {exc.code}"
    return None


@pytest.mark.parametrize("path", DOC_FILES, ids=_ids(DOC_FILES))
def test_documented_commands_parse(path: Path) -> None:
    parser = build_parser()
    failures = []
    for number, cmd in pose6d_lines(path.read_text(encoding="utf-8")):
        if "$" in cmd:
            continue
        error = parse_error(parser, cmd)
        if error is not None:
            failures.append(f"{path.relative_to(REPO)}:{number}: {cmd}\n    {error}")
    assert not failures, "documented commands that do not parse:\n" + "\n".join(failures)


LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def anchors(path: Path) -> set[str]:
    """The heading anchors of a Markdown file (outside code blocks)."""
    out, in_code = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m and not in_code:  # GitHub: lower case, punctuation dropped, spaces to hyphens
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-"))
    return out


def relative_links(text: str) -> list[tuple[int, str]]:
    """`(line number, target)` of every relative link outside code blocks and code spans."""
    found, in_code = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_code = not in_code
            continue
        if in_code:
            continue
        for m in LINK.finditer(re.sub(r"`[^`]*`", "``", line)):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, mailto:, ...
                continue
            found.append((number, target))
    return found


@pytest.mark.parametrize("path", DOC_FILES, ids=_ids(DOC_FILES))
def test_relative_links_exist(path: Path) -> None:
    failures = []
    for number, target in relative_links(path.read_text(encoding="utf-8")):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(REPO)}:{number}: {target}"
        if not dest.exists():
            failures.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            failures.append(f"{where}: no heading with that anchor in {dest.name}")
    assert not failures, "broken relative links:\n" + "\n".join(failures)
