"""The docs cannot rot: what README.md and docs/*.md show must still work.

- Every command in a fenced ```bash block that runs one of our scripts (src/*.py, benchmarks/*.py)
  names only flags that the script's --help lists.
- Every relative link resolves to a file, and its #anchor (if any) to a heading of that page.

New pages in docs/ are picked up by themselves. Fast: --help imports no TensorFlow.
"""

import os
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPT = re.compile(r"(?:^|/)((?:src|benchmarks)/\w+\.py)$")
FENCED = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")", "))"}


def bash_commands(text):
    """Each command of the page's ```bash blocks, as a list of words (pipes and && split commands)."""
    for lang, block in FENCED.findall(text):
        if lang != "bash":
            continue
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.shlex(line, posix=True, punctuation_chars=True)
            words.whitespace_split = True
            command = []
            for word in [*words, ";"]:
                if word in SEPARATORS:
                    if command:
                        yield command
                    command = []
                else:
                    command.append(word)


@lru_cache(maxsize=None)
def help_flags(script):
    """The --flags that `python SCRIPT --help` lists under its options (not those in its description)."""
    env = {**os.environ, "IMDB_FAST_MALLOC": "0"}  # no tcmalloc re-run: --help should be quick
    result = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"{script} --help failed:\n{result.stderr[-2000:]}"
    options = re.split(r"^(?:options|optional arguments):$", result.stdout, flags=re.M)[-1]
    # Options start 2 spaces in ("  -h, --help", "  --epochs N"); wrapped help text starts further in.
    return frozenset(re.findall(r"^  (?:-\w[^ ,]*(?: [^ ,]+)?, )?(--[\w-]+)", options, flags=re.M))


def command_problems(page):
    """Commands that run a script that does not exist, or name a flag its --help does not list."""
    problems = []
    for words in bash_commands(page.read_text()):
        at = next((i for i, word in enumerate(words) if SCRIPT.search(word)), None)
        if at is None:
            continue
        script = SCRIPT.search(words[at]).group(1)
        if not (ROOT / script).is_file():
            problems.append(f"{page.name}: {script} does not exist: {' '.join(words)}")
            continue
        flags = [word.split("=")[0] for word in words[at + 1:] if word.startswith("--")]
        unknown = [flag for flag in flags if flag not in help_flags(script)]
        if unknown:
            problems.append(f"{page.name}: {script} has no {', '.join(unknown)}: {' '.join(words)}")
    return problems


def slug(heading):
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(page):
    seen, out = {}, set()
    for line in FENCED.sub("", page.read_text()).splitlines():
        match = re.match(r"#{1,6} +(.+?) *#*$", line)
        if match:
            base = slug(match.group(1))
            out.add(f"{base}-{seen[base]}" if base in seen else base)  # GitHub numbers repeats: x, x-1, ...
            seen[base] = seen.get(base, 0) + 1
    return out


def link_problems(page):
    """Relative links whose file does not exist, or whose #anchor is no heading of that file."""
    text = re.sub(r"`[^`\n]*`", "", FENCED.sub("", page.read_text()))  # links in code are not links
    problems = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            problems.append(f"{page.name}: link to a missing file: {target}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{page.name}: link to a missing heading: {target}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_name_only_flags_the_scripts_have(page):
    problems = command_problems(page)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page):
    problems = link_problems(page)
    assert not problems, "\n".join(problems)


def test_the_docs_are_found():
    names = {str(p.relative_to(ROOT)) for p in PAGES}
    assert {"README.md", "docs/training.md", "docs/inference.md", "docs/performance.md"} <= names
    assert any(bash_commands((ROOT / "README.md").read_text()))


def test_a_typo_is_caught(tmp_path):
    (tmp_path / "real.md").write_text("# A heading (`--flag`)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\n"
        ".venv/bin/python src/train.py --epochs 1 --batch-size 16 --sample=200 | tail\n"  # fine
        ".venv/bin/python src/train.py --epoch 1 \\\n  --maxlen 128 && python src/predict.py --jsn -\n"
        "flock /tmp/lock python benchmarks/inference.py --n 10 --modle DIR   # a comment --not-a-flag\n"
        "python src/tran.py --epochs 1\n"
        "```\n"
        "[ok](real.md) [ok](real.md#a-heading---flag) [ok](#) [web](https://example.org/x.md) `[code](no.md)`\n"
        "[gone](missing.md) [bad anchor](real.md#a-headin)\n"
    )
    assert command_problems(page) == [
        "page.md: src/train.py has no --epoch: .venv/bin/python src/train.py --epoch 1 --maxlen 128",
        "page.md: src/predict.py has no --jsn: python src/predict.py --jsn -",
        "page.md: benchmarks/inference.py has no --modle: "
        "flock /tmp/lock python benchmarks/inference.py --n 10 --modle DIR",
        "page.md: src/tran.py does not exist: python src/tran.py --epochs 1",
    ]
    assert link_problems(page) == ["page.md: link to a missing file: missing.md",
                                   "page.md: link to a missing heading: real.md#a-headin"]
