"""Offline tiktoken encodings: shipped with the package, verified by checksum.

    proxy/data/encodings/cl100k_base.tiktoken (1.7 MB), o200k_base.tiktoken (3.6 MB)
        package data, the files OpenAI publishes for tiktoken (MIT, © OpenAI: LICENSE beside
        them), byte for byte; their sha256 are the digests tiktoken itself pins and are checked
        every time they are loaded (proxy/tokens.py), so a corrupt install is refused, not
        silently approximated.  `pip install .` alone gives exact counts; nothing downloads.

    INTERLOCK_ENCODINGS_DIR  another directory with the same two files (same digests)

    `interlock encodings install --dest DIR` fills such a directory from the pinned litellm
    wheel (the one registry package that carries both files):

    pip download litellm==1.110.2 (the machine's configured index, no direct URLs)
        └── wheel (zip) ── litellm/litellm_core_utils/tokenizers/<sha1 of the original URL>
                │            only the two members below are read; nothing is imported
                ▼
        verify sha256 ── mismatch: EncodingChecksumError
                ▼
        <dest>/cl100k_base.tiktoken, <dest>/o200k_base.tiktoken (atomic rename)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

LITELLM_VERSION = "1.110.2"
# The data files are the same in every litellm wheel; pinning one platform makes the
# download deterministic on any machine (arm64 images and macOS included).
_PIP_PLATFORM = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp")
_MEMBER_DIR = "litellm/litellm_core_utils/tokenizers/"


@dataclass(frozen=True, slots=True)
class EncodingFile:
    """One encoding file: its name, its member in the wheel, its sha256."""

    name: str
    member: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name}.tiktoken"


CL100K_BASE = EncodingFile(
    "cl100k_base",
    _MEMBER_DIR + "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
)
O200K_BASE = EncodingFile(
    "o200k_base",
    _MEMBER_DIR + "fb374d419588a4632f3f557e76b4b70aebbca790",
    "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
)
ENCODING_FILES: tuple[EncodingFile, ...] = (CL100K_BASE, O200K_BASE)

Downloader = Callable[[Path], Path]


class EncodingInstallError(RuntimeError):
    """The encodings could not be obtained (download failed, wheel unreadable)."""


class EncodingChecksumError(EncodingInstallError):
    """A file's sha256 is not the pinned one: it is refused, never written."""


def default_encodings_dir() -> Path:
    """The encodings shipped inside the package."""
    return Path(__file__).parent / "data" / "encodings"


def problems(directory: Path, files: Sequence[EncodingFile] = ENCODING_FILES) -> list[str]:
    """What is wrong with `directory` as an encodings directory (empty: nothing)."""
    found = []
    for spec in files:
        path = directory / spec.filename
        if not path.is_file():
            found.append(f"{path} is missing")
        elif not is_installed(directory, spec):
            found.append(f"{path} does not have the pinned sha256 {spec.sha256[:8]}…")
    return found


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_installed(dest: Path, spec: EncodingFile) -> bool:
    """True when `dest` holds the file with the pinned digest."""
    path = dest / spec.filename
    return path.is_file() and sha256_of(path.read_bytes()) == spec.sha256


def download_wheel(tmp: Path) -> Path:
    """`pip download` the pinned litellm wheel (no dependencies) into `tmp`; return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", *_PIP_PLATFORM]
    cmd += [f"litellm=={LITELLM_VERSION}", "-d", str(tmp), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(tmp.glob(f"litellm-{LITELLM_VERSION}-*.whl"))
    if done.returncode != 0 or not wheels:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise EncodingInstallError(
            f"pip download litellm=={LITELLM_VERSION} failed (exit {done.returncode}): " + " | ".join(tail)
        )
    return wheels[0]


def _read_member(wheel: Path, spec: EncodingFile) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(spec.member)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise EncodingInstallError(f"{wheel}: cannot read {spec.member}: {exc}") from exc
    actual = sha256_of(data)
    if actual != spec.sha256:
        raise EncodingChecksumError(
            f"{wheel}: {spec.member} ({spec.name}) has sha256 {actual}, expected {spec.sha256}; refusing it"
        )
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def install_encodings(
    dest: Path,
    *,
    wheel: Path | None = None,
    files: Sequence[EncodingFile] = ENCODING_FILES,
    download: Downloader = download_wheel,
) -> list[Path]:
    """Make `dest` hold every file in `files`, verified; return their paths.

    Files already present with the right digest are kept and, when all are, nothing is
    downloaded.  `wheel` uses a local litellm wheel instead of `download` (pip).  Every
    member is verified before anything is written, so a bad wheel leaves `dest` unchanged.
    Raises EncodingChecksumError on a digest mismatch, EncodingInstallError otherwise.
    """
    missing = [spec for spec in files if not is_installed(dest, spec)]
    if missing:
        with tempfile.TemporaryDirectory(prefix="interlock-encodings-") as tmp:
            source = wheel if wheel is not None else download(Path(tmp))
            blobs = [(spec, _read_member(source, spec)) for spec in missing]
        dest.mkdir(parents=True, exist_ok=True)
        for spec, data in blobs:
            _write_atomic(dest / spec.filename, data)
    return [dest / spec.filename for spec in files]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="interlock encodings install",
        description="The tiktoken encodings (o200k_base, cl100k_base) ship with Interlock; this checks them, "
        f"or with --dest fills another directory (for INTERLOCK_ENCODINGS_DIR) from the litellm=={LITELLM_VERSION} "
        "wheel, verified by sha256.",
    )
    parser.add_argument("--dest", type=Path, default=None, help="fill this directory instead of checking the shipped files")
    parser.add_argument(
        "--wheel", type=Path, default=None, help="use this local litellm wheel instead of pip download"
    )
    args = parser.parse_args(argv)
    if args.dest is None:
        wrong = problems(default_encodings_dir())
        if wrong:
            print("error: the encodings shipped with Interlock are damaged: " + "; ".join(wrong)
                  + " (reinstall Interlock)", file=sys.stderr)
            return 1
        print(f"the encodings ship with Interlock and are verified: {default_encodings_dir()}")
        return 0
    try:
        paths = install_encodings(args.dest, wheel=args.wheel)
    except EncodingInstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
