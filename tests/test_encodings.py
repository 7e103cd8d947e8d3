"""The encodings installer, without the network: a fake wheel stands in for pip's download."""

from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from proxy import encodings
from proxy.encodings import (
    ENCODING_FILES,
    EncodingChecksumError,
    EncodingFile,
    EncodingInstallError,
    default_encodings_dir,
    install_encodings,
    is_installed,
)

MEMBER_DIR = "litellm/litellm_core_utils/tokenizers/"
CONTENT = {"alpha": b"YQ== 0\nYg== 1\n", "beta": b"Yw== 0\n"}
REAL_WHEELS = sorted(Path("/tmp/ll").glob("litellm-*.whl"))


def spec(name: str, content: bytes | None = None) -> EncodingFile:
    digest = hashlib.sha256(CONTENT[name] if content is None else content).hexdigest()
    return EncodingFile(name, MEMBER_DIR + f"sha1-of-{name}", digest)


FILES = (spec("alpha"), spec("beta"))


def make_wheel(path: Path, members: dict[str, bytes] | None = None) -> Path:
    members = members if members is not None else {MEMBER_DIR + f"sha1-of-{k}": v for k, v in CONTENT.items()}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("litellm/__init__.py", "raise RuntimeError('never imported')\n")
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def no_download(tmp: Path) -> Path:
    raise AssertionError("the installer must not download here")


def test_extracts_only_the_encoding_files_from_a_local_wheel(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "litellm-0-py3-none-any.whl")
    dest = tmp_path / "enc"

    paths = install_encodings(dest, wheel=wheel, files=FILES, download=no_download)

    assert paths == [dest / "alpha.tiktoken", dest / "beta.tiktoken"]
    assert [p.read_bytes() for p in paths] == [CONTENT["alpha"], CONTENT["beta"]]
    assert sorted(p.name for p in dest.iterdir()) == ["alpha.tiktoken", "beta.tiktoken"]


def test_downloads_the_wheel_when_none_is_given(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "litellm-0-py3-none-any.whl")
    asked: list[Path] = []

    def download(tmp: Path) -> Path:
        asked.append(tmp)
        return wheel

    install_encodings(tmp_path / "enc", files=FILES, download=download)

    assert len(asked) == 1


def test_refuses_a_file_whose_checksum_does_not_match(tmp_path: Path) -> None:
    wheel = make_wheel(
        tmp_path / "w.whl",
        {MEMBER_DIR + "sha1-of-alpha": b"tampered", MEMBER_DIR + "sha1-of-beta": CONTENT["beta"]},
    )
    dest = tmp_path / "enc"

    with pytest.raises(
        EncodingChecksumError, match=r"alpha.*has sha256 [0-9a-f]{64}, expected [0-9a-f]{64}; refusing"
    ):
        install_encodings(dest, wheel=wheel, files=FILES, download=no_download)

    assert not dest.exists()  # nothing written, not even the file that was right


def test_a_second_install_is_a_no_op(tmp_path: Path) -> None:
    dest = tmp_path / "enc"
    install_encodings(dest, wheel=make_wheel(tmp_path / "w.whl"), files=FILES)
    before = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}

    install_encodings(dest, files=FILES, download=no_download)

    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == before


def test_a_corrupted_installed_file_is_replaced(tmp_path: Path) -> None:
    dest = tmp_path / "enc"
    install_encodings(dest, wheel=make_wheel(tmp_path / "w.whl"), files=FILES)
    (dest / "beta.tiktoken").write_bytes(b"bit rot")
    assert not is_installed(dest, FILES[1])

    install_encodings(dest, wheel=tmp_path / "w.whl", files=FILES)

    assert (dest / "beta.tiktoken").read_bytes() == CONTENT["beta"]


def test_a_wheel_without_the_member_is_a_clear_error(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w.whl", {})

    with pytest.raises(
        EncodingInstallError, match="cannot read litellm/litellm_core_utils/tokenizers/sha1-of-alpha"
    ):
        install_encodings(tmp_path / "enc", wheel=wheel, files=FILES)


def test_pip_failure_is_reported_with_its_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        assert f"litellm=={encodings.LITELLM_VERSION}" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for litellm")

    monkeypatch.setattr(encodings.subprocess, "run", fake_run)

    with pytest.raises(EncodingInstallError, match="exit 1.*No matching distribution"):
        encodings.download_wheel(tmp_path)


def test_cli_refuses_a_wheel_with_wrong_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    members = {f.member: b"not the encoding" for f in ENCODING_FILES}
    wheel = make_wheel(tmp_path / "w.whl", members)

    code = encodings.main(["--dest", str(tmp_path / "enc"), "--wheel", str(wheel)])

    assert code == 1
    assert "refusing it" in capsys.readouterr().err


@pytest.mark.skipif(not REAL_WHEELS, reason="no litellm wheel in /tmp/ll to extract from")
def test_cli_installs_from_the_real_litellm_wheel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = encodings.main(["--dest", str(tmp_path), "--wheel", str(REAL_WHEELS[-1])])

    assert code == 0
    assert capsys.readouterr().out.split() == [
        str(tmp_path / "cl100k_base.tiktoken"),
        str(tmp_path / "o200k_base.tiktoken"),
    ]


def test_the_environment_has_the_encodings_installed() -> None:
    dest = default_encodings_dir()
    if not all(is_installed(dest, f) for f in ENCODING_FILES):
        msg = f"encodings are not installed in {dest} (run `python -m proxy.encodings`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{msg}; setup installs them, so CI requires them")
        pytest.skip(msg)
