"""The docs run as written: every ```python / ```bash / ```sh block of README.md and docs/*.md, top to bottom.

Each document runs in its own fresh temporary working directory with the repository's Python environment
first on PATH (so `python` and `latcomp` are the checkout's): its bash/sh blocks with `bash -e -o pipefail`,
its python blocks in one shared namespace, like a reader pasting them into one shell and one interpreter.
A block whose fence is preceded by `<!-- doc-test: skip REASON -->` (the team's convention) is not run;
each such block is reported here as a skipped test with its reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent> {0,3})```(?P<lang>[\w-]*)\s*$")
SKIP = re.compile(r"^\s*<!--\s*doc-test:\s*skip\b\s*(?P<reason>.*?)\s*-->\s*$")
LANGUAGES = {"python": "python", "bash": "bash", "sh": "bash"}
TIMEOUT_S = 900  # one document, all its blocks


@dataclass
class Block:
    document: str  # path relative to the repository
    line: int  # the opening fence's line, 1-based
    language: str  # "python" or "bash"
    code: str
    skip: str | None  # the reason, when marked

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The runnable blocks of one Markdown file, in order."""
    found, lines = [], path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = next((j for j in range(index + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
        language = LANGUAGES.get(opening["lang"])
        if language:
            before = next((lines[j] for j in range(index - 1, -1, -1) if lines[j].strip()), "")
            marker = SKIP.match(before)
            indent = len(opening["indent"])
            code = "\n".join(line[indent:] for line in lines[index + 1 : end])
            skip = (marker["reason"] or "no reason given") if marker else None
            found.append(Block(str(path.relative_to(REPO)), index + 1, language, code, skip))
        index = end + 1
    return found


ALL = {path: blocks(path) for path in DOCUMENTS}
RUNNABLE = [path for path, found in ALL.items() if any(block.skip is None for block in found)]
SKIPPED = [block for found in ALL.values() for block in found if block.skip is not None]

# Runs in a child interpreter: the blocks of one document, in order, stopping at the first failure.
HARNESS = r"""
import json, subprocess, sys, traceback
blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for block in blocks:
    print(f"--- {block['where']} ({block['language']})", flush=True)
    if block["language"] == "bash":
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block["code"]])
        if done.returncode:
            sys.exit(f"FAILED {block['where']}: bash exited {done.returncode}")
    else:
        try:
            exec(compile(block["code"], block["where"], "exec"), namespace)
        except BaseException:
            traceback.print_exc()
            sys.exit(f"FAILED {block['where']}: the python block raised")
"""


def test_every_document_is_found():
    assert (REPO / "README.md") in ALL and len(DOCUMENTS) > 1


def test_skip_markers_sit_right_before_a_fence():
    """A marker that is not followed by a runnable block would silently skip nothing, or the wrong block."""
    stray = []
    for path in DOCUMENTS:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if SKIP.match(line):
                following = next((text for text in lines[number + 1 :] if text.strip()), "")
                fence = FENCE.match(following)
                if not fence or fence["lang"] not in LANGUAGES:
                    stray.append(f"{path.relative_to(REPO)}:{number + 1}")
    assert not stray, f"doc-test skip markers not followed by a python/bash/sh fence: {stray}"


def test_links_point_into_the_repository():
    """Relative links name files of this repository (a clone has nothing beside it, such as ../shared)."""
    broken = []
    for path in DOCUMENTS:
        for link in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if link.startswith(("http://", "https://", "#", "mailto:")):
                continue
            target = (path.parent / link.split("#")[0]).resolve()
            if not target.exists() or REPO not in target.parents:
                broken.append(f"{path.relative_to(REPO)}: {link}")
    assert not broken, f"links to files outside the repository or missing: {broken}"


@pytest.mark.parametrize("path", RUNNABLE, ids=[str(path.relative_to(REPO)) for path in RUNNABLE])
def test_document_runs_as_written(path, tmp_path):
    import json

    todo = [{"where": block.where, "language": block.language, "code": block.code}
            for block in ALL[path] if block.skip is None]
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("PYTHONPATH", None)  # as a reader has it: latcomp comes from the installed checkout
    done = subprocess.run([sys.executable, "-c", HARNESS], input=json.dumps(todo), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    output = (done.stdout + done.stderr)[-6000:]
    assert done.returncode == 0, f"{path.relative_to(REPO)} does not run as written:\n{output}"


@pytest.mark.parametrize("block", SKIPPED, ids=[block.where for block in SKIPPED])
def test_marked_block(block):
    pytest.skip(f"{block.where} not run: {block.skip}")
