"""The README's command blocks, and a clean clone to run them in (for tests/test_readme.py).

    README.md ── <!-- readme-test: NAME --> + a fenced block ──▶ Block(name, lang, text)
    clean clone: the repository's files (tracked and new, not ignored) copied to a temporary
                 directory, with an empty .venv whose site-packages reach this venv's
                 dependencies (not Interlock itself) through a .pth file, and pip told to use
                 only a cached wheel directory holding the build backend (setuptools, wheel):
                 ./run.sh then really installs Interlock with pip, offline.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_MARKED = re.compile(r"<!-- readme-test: ([\w-]+) -->\n```(\w+)\n(.*?)```", re.S)
_FENCE = re.compile(r"^```(bash|sh|console|shell)\n", re.M)
BUILD_WHEELS = Path(os.environ.get("INTERLOCK_TEST_WHEELS", Path.home() / ".cache" / "interlock-tests" / "wheels"))
_BUILD_REQUIREMENTS = ("setuptools>=68", "wheel")


@dataclass(frozen=True, slots=True)
class Block:
    name: str
    lang: str
    text: str

    def commands(self) -> list[str]:
        """Shell commands: one per line, comments and blank lines dropped, `\\` continuations joined."""
        joined = self.text.replace("\\\n", " ")
        lines = [line.split("  #", 1)[0].strip() for line in joined.splitlines()]
        return [line for line in lines if line and not line.startswith("#")]


def blocks(text: str | None = None) -> list[Block]:
    return [Block(*m.groups()) for m in _MARKED.finditer(text if text is not None else README.read_text())]


def shell_fences(text: str | None = None) -> int:
    """How many shell code blocks the README has, marked or not."""
    return len(_FENCE.findall(text if text is not None else README.read_text()))


def named(name: str) -> list[Block]:
    found = [b for b in blocks() if b.name == name]
    assert found, f"README.md has no block marked <!-- readme-test: {name} -->"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_wheels() -> Path:
    """A directory with the build backend's wheels, downloaded once (from the configured index)
    and reused offline afterwards."""
    marker = BUILD_WHEELS / ".complete"
    if not marker.exists():
        BUILD_WHEELS.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d",
                        str(BUILD_WHEELS), *_BUILD_REQUIREMENTS], check=True, timeout=300)
        marker.touch()
    return BUILD_WHEELS


def wheels_or_skip() -> Path:
    """build_wheels(), or skip the calling test when they can neither be found nor downloaded
    (a laptop offline); in CI that is a failure."""
    try:
        return build_wheels()
    except (subprocess.SubprocessError, OSError) as exc:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(f"no cached build-backend wheels and none could be downloaded: {exc}")


def copy_checkout(dest: Path) -> Path:
    """The repository's files as a fresh clone would have them (plus uncommitted edits)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.split(b"\0")
    for rel in filter(None, listed):
        src = ROOT / rel.decode()
        if src.is_file():
            target = dest / rel.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def shared_dependencies(dest: Path) -> Path:
    """This venv's installed distributions, without Interlock itself, as a directory of links."""
    site = Path(sysconfig.get_paths()["purelib"])
    dest.mkdir(parents=True, exist_ok=True)
    for entry in site.iterdir():
        name = entry.name
        if name.startswith(("__editable__", "interlock-", "_interlock")) or name.endswith(".pth") \
                or name == "__pycache__":
            continue
        (dest / name).symlink_to(entry)
    return dest


def bare_venv(path: Path, deps: Path) -> Path:
    """An empty venv (no pip of its own) that imports the shared dependencies."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    purelib = subprocess.run([str(path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "_interlock_test_deps.pth").write_text(f"{deps}\n")
    return path


def offline_pip_env(wheels: Path) -> dict[str, str]:
    """pip without any index: dependencies are already there, the build backend comes from `wheels`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "INTERLOCK_", "VIRTUAL_ENV"))}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels), PIP_CONFIG_FILE=os.devnull,
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env
