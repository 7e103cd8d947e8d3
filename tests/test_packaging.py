"""What `pip install .` alone gives: the tokenizer data ships in the package, so a context rule
counts exactly.  A plain (non-editable) install into an empty venv, served from outside the
repository, against tests/fake_upstream.py."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from proxy.encodings import ENCODING_FILES
from tests import readme
from tests.fake_upstream import FakeUpstream

CONTEXT_RULE = "rules:\n  - {name: fits, kind: context, action: deny}\n"
# " 7" is two o200k tokens in two characters: ~4 characters per token would count a quarter
DENSE = " 7" * 72_500  # 145,000 tokens, which a 4-characters-per-token estimate takes for ~36,000


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheels = readme.wheels_or_skip()
    tmp = tmp_path_factory.mktemp("pip-install")
    source = readme.copy_checkout(tmp / "src")
    venv = readme.bare_venv(tmp / "venv", readme.shared_dependencies(tmp / "deps"))
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "."], cwd=source, check=True,
                   env=readme.offline_pip_env(wheels), timeout=600)
    return venv


def test_the_wheel_carries_the_encodings_verified() -> None:
    names = {f.filename for f in ENCODING_FILES} | {"LICENSE"}
    assert {p.name for p in (readme.ROOT / "proxy" / "data" / "encodings").iterdir()} >= names


def test_pip_install_alone_refuses_a_145k_token_request_to_a_128k_model(
    installed: Path, tmp_path: Path, upstream: FakeUpstream
) -> None:
    site = subprocess.run([str(installed / "bin" / "python"), "-c", "import proxy; print(proxy.__file__)"],
                          check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert str(installed) in site, f"the proxy package must come from the installed venv, not {site}"
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "context.yaml").write_text(CONTEXT_RULE)
    shutil.copytree(readme.ROOT / "migrations", tmp_path / "migrations")  # as the Docker image does
    port = readme.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERLOCK_")}
    env.update(INTERLOCK_UPSTREAM_OPENAI=upstream.url, INTERLOCK_PORT=str(port))
    proc = subprocess.Popen([str(installed / "bin" / "interlock"), "serve"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_healthy(port, proc)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test")

        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="gpt-4o", max_tokens=100,
                                           messages=[{"role": "user", "content": DENSE}])

        assert isinstance(err.value.body, dict) and err.value.body["code"] == "interlock_context_overflow"
        assert "145,0" in err.value.message and "128,000" in err.value.message
        assert not upstream.requests
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(15)


def test_a_damaged_encodings_dir_stops_the_start_saying_why(tmp_path: Path) -> None:
    (tmp_path / "o200k_base.tiktoken").write_text("not the file\n")
    env = {**os.environ, "INTERLOCK_ENCODINGS_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "proxy.cli", "serve", "--port", str(readme.free_port())], env=env,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "encodings_dir (INTERLOCK_ENCODINGS_DIR)" in line and "cl100k_base.tiktoken is missing" in line
    assert "sha256" in line


def _wait_healthy(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            assert proc.stderr is not None
            pytest.fail(f"interlock serve exited {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail("interlock serve did not answer /healthz within 60 s")


def test_the_installed_package_holds_the_encodings(installed: Path) -> None:
    found = list(installed.glob("lib/python*/site-packages/proxy/data/encodings/*.tiktoken"))
    assert sorted(p.name for p in found) == sorted(f.filename for f in ENCODING_FILES)


def test_the_installed_package_holds_the_console(installed: Path) -> None:
    static = next(installed.glob("lib/python*/site-packages/proxy/ui/static"))
    shipped = {p.relative_to(static).as_posix() for p in static.rglob("*") if p.is_file()}
    assert {"index.html", "app.js", "style.css", "vendor/cytoscape.esm.min.mjs", "vendor/cytoscape-dagre.min.mjs",
            "vendor/LICENSE.cytoscape"} <= shipped
