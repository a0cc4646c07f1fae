"""The docs cannot drift: every `mdbatch ...` command a page shows runs, and every relative link resolves.

Each page (README.md and docs/*.md; docs/repair.md and docs/lineage.md are run by their own tests)
runs in a fresh empty directory: its fenced bash blocks, line by line in page order, and the python
blocks of docs/api.md in the same namespace. Conventions the pages state:

- `campaign` is a campaign root (each page generates it) and the catalog is the default
  `sqlite:///mdbatch.db` in the working directory (MDBATCH_DB unset, the config file in that directory);
- `RUN_ID` stands for the newest run recorded in that catalog;
- a PostgreSQL URL is rewritten to a fresh schema of the test server (skips locally without it,
  fails under CI=true, as tests/conftest.py need_service);
- `--cluster slurm` commands need the local Slurm (SLURM_CONF; .ci/run starts it): skipped locally
  without it, required under CI;
- a comment starting `# exit N` pins the exit code; otherwise 0 or 1 (findings, changes) pass, and 2 (error:
  a bad option, a missing catalog) or 3 fail;
- only `mdbatch` is run: `sbatch` lines and the site scripts are run by tests/test_slurm.py, the
  install commands by .ci/run; `> FILE` keeps stdout in FILE, `| ...` drops it.
"""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .conftest import need_service

REPO = Path(__file__).resolve().parents[1]
#: Written and tested by their own authors (tests of repair and lineage).
OWN_TESTS = {"repair.md", "lineage.md"}
PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md") if p.name not in OWN_TESTS)]
LINKED = ["README.md", "benchmarks/README.md", "benchmarks/RESULTS.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md"))]
#: Pages that show no command (they point to the pages that do).
NO_COMMANDS = {"docs/design.md", "docs/reliability.md"}
SHELL = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)[^\n]*\n(.*?)^\1\s*$", re.S | re.M)
PG_URL = re.compile(r"postgresql(\+psycopg)?://[^\s'\"]+")
EXIT = re.compile(r"#\s*exit (\d+)\b")
SEPARATORS = {"&&", "||", ";", "|"}


@dataclass
class Command:
    """One `mdbatch` invocation a page shows."""

    line: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stdout_to: str | None = None
    exit_code: int | None = None


@dataclass
class Block:
    lang: str
    text: str
    start: int  # line number in the page


def blocks(text: str) -> list[Block]:
    """The fenced code blocks of a markdown text, in order."""
    return [Block(m.group(2).lower(), m.group(3), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def shell_lines(code: str) -> list[str]:
    """The logical lines of a shell block: continuations joined, `$ ` prompts dropped, blanks skipped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line.strip().removeprefix("$ ") for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def commands(line: str) -> list[Command]:
    """The `mdbatch` commands of one shell line (others, like sbatch, are not run here)."""
    want = EXIT.search(line)
    tokens = shlex.split(line, comments=True)
    segments: list[list[str]] = [[]]
    for token in tokens:
        if token in SEPARATORS:
            segments.append([])
        else:
            segments[-1].append(token)
    found = []
    for seg in segments:
        env = {}
        while seg and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", seg[0]):
            key, _, value = seg.pop(0).partition("=")
            env[key] = value
        if not seg or os.path.basename(seg[0]) != "mdbatch":
            assert not any(os.path.basename(t) == "mdbatch" for t in seg), f"an mdbatch command in a form the docs test cannot run: {line}"
            continue
        argv, target = seg[1:], None
        if ">" in argv:
            at = argv.index(">")
            argv, target = argv[:at], argv[at + 1]
        pinned = int(want.group(1)) if want else None
        assert pinned in (None, 0, 1), f"a page may not show a failing command (exit {pinned}): {line}"
        found.append(Command(line, argv, env, target, pinned))
    return found


def page_steps(page: str) -> list[tuple[str, Any]]:
    """('shell', Command) and ('python', code) steps of a page, in page order."""
    steps: list[tuple[str, Any]] = []
    for block in blocks((REPO / page).read_text()):
        if block.lang in SHELL:
            steps += [("shell", c) for line in shell_lines(block.text) for c in commands(line)]
        elif block.lang == "python":
            steps.append(("python", (block.start, block.text)))
        else:
            for line in block.text.splitlines():
                assert not re.match(r"\s*(\$ )?mdbatch \w", line), f"{page}:{block.start}: a command outside a bash block: {line}"
    return steps


def newest_run(workdir: Path) -> str:
    with sqlite3.connect(workdir / "mdbatch.db") as conn:
        row = conn.execute("SELECT run_id FROM MDBATCH_RUNS ORDER BY started_at DESC, run_id DESC LIMIT 1").fetchone()
    assert row, "RUN_ID used before any run was recorded"
    return str(row[0])


def slurm_ready() -> bool:
    from .test_slurm import slurm_available

    return slurm_available()


def run_command(cmd: Command, workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, pg: Any) -> None:
    from mdbatch.cli import main

    argv = [pg() if PG_URL.fullmatch(a) else a for a in cmd.argv]
    if any("RUN_ID" in a for a in argv):
        run_id = newest_run(workdir)
        argv = [a.replace("RUN_ID", run_id) for a in argv]
    with monkeypatch.context() as m:
        for key, value in cmd.env.items():
            m.setenv(key, pg() if PG_URL.fullmatch(value) else value)
        capsys.readouterr()
        code = main(argv)
        out = capsys.readouterr()
    if cmd.stdout_to:
        (workdir / cmd.stdout_to).write_text(out.out)
    allowed = {cmd.exit_code} if cmd.exit_code is not None else {0, 1}
    assert code in allowed, f"`{cmd.line}` exited {code} (expected {sorted(allowed)}):\n{out.err[-3000:]}"


@pytest.mark.parametrize("page", PAGES)
def test_page_commands_run(page, tmp_path, capsys, monkeypatch, request):
    steps = page_steps(page)
    if not steps:
        assert page in NO_COMMANDS, f"{page} shows no command the docs test can find"
        return
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("MDBATCH_DB", raising=False)
    monkeypatch.setenv("MDBATCH_CONFIG", str(workdir / "config.toml"))
    pg_urls: list[str] = []

    def pg() -> str:
        if not pg_urls:
            pg_urls.append(str(request.getfixturevalue("pg_url")))
        return pg_urls[0]

    skipped = []
    namespace: dict[str, Any] = {"__name__": "docs"}
    for kind, step in steps:
        if kind == "python":
            start, code = step
            exec(compile(code, f"{page}:{start}", "exec"), namespace)  # noqa: S102 - the page's own example
        elif "slurm" in step.argv and "--cluster" in step.argv and not slurm_ready():
            skipped.append(step.line)
        else:
            run_command(step, workdir, capsys, monkeypatch, pg)
    if skipped:
        need_service(False, f"local Slurm (SLURM_CONF) for: {'; '.join(skipped)}")


def test_readme_test_command_is_the_ci_command():
    ci = (REPO / ".ci" / "run").read_text()
    (test_cmd,) = re.findall(r'^TEST_CMD="(.*)"$', ci, re.M)
    shown = [line for b in blocks((REPO / "README.md").read_text()) for line in b.text.splitlines() if "-m pytest" in line]
    assert shown == [test_cmd]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.*)$", text, re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


@pytest.mark.parametrize("page", LINKED)
def test_relative_links_resolve(page):
    source = REPO / page
    if not source.exists():
        pytest.fail(f"{page} is missing")
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", source.read_text()))
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (source.parent / path).resolve() if path else source
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, f"{page}: {broken}"


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("mdbatch audit campaign --no-such-option", "exited 2"),
        ("mdbatch findings --db sqlite:///missing.db", "exited 2"),
        ("mdbatch audit campaign --fail-on none   # exit 1", "exited 0"),
    ],
)
def test_a_page_showing_a_failing_command_fails(line, why, tmp_path, capsys, monkeypatch):
    """The harness itself: an unknown option, a missing catalog or a wrong pinned exit code fails the page."""
    from mdbatch.generate import generate_campaign

    generate_campaign(tmp_path / "campaign", 15, faults=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MDBATCH_DB", raising=False)
    monkeypatch.setenv("MDBATCH_CONFIG", str(tmp_path / "config.toml"))
    (cmd,) = commands(line)
    with pytest.raises(AssertionError, match=why):
        run_command(cmd, tmp_path, capsys, monkeypatch, lambda: "unused")


def test_commands_are_extracted_as_a_shell_reads_them():
    text = "```bash\nFOO=1 mdbatch runs list --root a \\\n    --format csv > runs.csv  # exit 0\nsbatch x.sbatch\n```\n"
    (cmd,) = [c for line in shell_lines(blocks(text)[0].text) for c in commands(line)]
    assert (cmd.argv, cmd.env, cmd.stdout_to, cmd.exit_code) == (
        ["runs", "list", "--root", "a", "--format", "csv"],
        {"FOO": "1"},
        "runs.csv",
        0,
    )
    with pytest.raises(AssertionError, match="may not show a failing command"):
        commands("mdbatch audit x  # exit 2")
