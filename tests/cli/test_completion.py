"""`mdbatch completion bash|zsh`: the generated script completes subcommands, options, choices and files
in a real bash and zsh."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import need_service
from .conftest import mdbatch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("completion")
    proc = mdbatch("completion", "bash", tmp=tmp)
    assert proc.returncode == 0, proc.stderr
    path = tmp / "mdbatch.bash"
    path.write_text(proc.stdout)
    return path


def complete(script: Path, line: str, cwd: Path | None = None) -> list[str]:
    """What bash offers for the command line `line` (completing its last word) with `script` loaded."""
    words = line.split(" ")
    program = f"""
source {script}
COMP_WORDS=({" ".join(repr(w) if w else "''" for w in words)})
COMP_CWORD={len(words) - 1}
COMP_LINE={line!r}
COMP_POINT={len(line)}
_mdbatch_complete
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    proc = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True, timeout=30, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return [w for w in proc.stdout.splitlines() if w]


def test_bash_registers_the_function(bash_script):
    proc = subprocess.run(
        ["bash", "--norc", "-c", f"source {bash_script}; complete -p mdbatch"], capture_output=True, text=True, timeout=30
    )
    assert proc.stdout.strip() == "complete -o bashdefault -o filenames -F _mdbatch_complete mdbatch"


def test_bash_completes_commands_options_choices_and_files(bash_script, tmp_path):
    assert complete(bash_script, "mdbatch ") == [
        "audit",
        "generate",
        "demo",
        "status",
        "findings",
        "runs",
        "push",
        "pull",
        "clear",
        "init-db",
        "config",
        "dedupe",
        "store",
        "repair",
        "registry",
        "report",
        "completion",
    ]
    assert complete(bash_script, "mdbatch ru") == ["runs"]
    assert complete(bash_script, "mdbatch runs ") == ["list", "show", "diff", "prune"]
    assert complete(bash_script, "mdbatch --debug runs sh") == ["show"]
    assert complete(bash_script, "mdbatch audit --fail") == ["--fail-on"]
    assert complete(bash_script, "mdbatch audit /x --fail-on ") == ["any", "new", "none"]
    assert complete(bash_script, "mdbatch findings --format ") == ["table", "jsonl", "csv"]
    assert set(complete(bash_script, "mdbatch status --")) == {"--db", "--debug", "--help", "--json", "--quiet", "-h"} - {"-h"}
    assert complete(bash_script, "mdbatch pull systems --st") == ["--status"]
    (tmp_path / "campaign-a").mkdir()
    (tmp_path / "campaign-b.yaml").write_text("")
    assert sorted(complete(bash_script, "mdbatch audit camp", cwd=tmp_path)) == ["campaign-a", "campaign-b.yaml"]
    assert sorted(complete(bash_script, "mdbatch status --db camp", cwd=tmp_path)) == ["campaign-a", "campaign-b.yaml"]


def test_zsh_script_is_the_bash_one_behind_bashcompinit(bash_script, tmp_path):
    proc = mdbatch("completion", "zsh", tmp=tmp_path)
    assert proc.returncode == 0
    head, _, body = proc.stdout.partition("autoload -U +X bashcompinit && bashcompinit\n")
    assert head.startswith("#compdef mdbatch\n") and body == bash_script.read_text()
    zsh = shutil.which("zsh")
    need_service(zsh is not None, "zsh is not installed (apt-get install zsh): the script was checked against bash only")
    assert zsh is not None
    script = tmp_path / "_mdbatch"
    script.write_text(proc.stdout)
    # What zsh's _bash_complete does around the function: sh emulation (0-based arrays), then the call.
    program = f"""source {script}
print -r -- ${{_comps[mdbatch]}}
emulate -L sh; setopt kshglob noshglob braceexpand
COMP_WORDS=(mdbatch runs ''); COMP_CWORD=2; _mdbatch_complete; print -r -- "${{COMPREPLY[*]}}"
COMP_WORDS=(mdbatch audit /x --fail-on ''); COMP_CWORD=4; _mdbatch_complete; print -r -- "${{COMPREPLY[*]}}"
"""
    check = subprocess.run([zsh, "-f", "-c", program], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    assert check.stdout.splitlines() == [
        "_bash_complete -o filenames -o bashdefault -F _mdbatch_complete",
        "list show diff prune",
        "any new none",
    ]
