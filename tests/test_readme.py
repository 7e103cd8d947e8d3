"""The README, executed: the quickstart from a clean copy of the repository (`./run.sh` really
installing with pip, offline), then every other marked command block, read from README.md so
the two cannot drift apart.  Upstream: tests/fake_upstream.py."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from proxy.cli import build_parser
from tests import readme
from tests.fake_upstream import FakeUpstream

# Every marked block and the test that runs it (test_every_command_block_is_run_by_a_test).
RUN_BY = {
    "quickstart": "test_quickstart_from_a_clean_clone",
    "agents": "test_quickstart_from_a_clean_clone",
    "see-calls": "test_quickstart_from_a_clean_clone",
    "demo": "test_demo_blocks",
    "demo-kept": "test_demo_blocks",
    "ci": "test_the_suite_commands_are_what_ci_runs",
    "migrations": "test_migration_commands",
    "rules-check": "test_rules_check_commands",
    "drill": "test_drill_command",
    "doctor": "test_doctor_command",
    "dashboards": "test_dashboards_check_command",
}
SAMPLE_RUN = re.compile(r"graph [0-9a-f]{6,26}\b")


@dataclass
class Clone:
    """A fresh copy of the repository, served by its own `./run.sh` on a free port."""

    root: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    startup: list[str] = field(default_factory=list)

    def localise(self, command: str) -> str:
        command = command.replace("127.0.0.1:8080", f"127.0.0.1:{self.port}")
        tool = command.split()[0]
        if tool.startswith(".venv/bin/") and not (self.root / tool).exists():
            command = f".venv/bin/python -m {tool.removeprefix('.venv/bin/')}{command[len(tool):]}"
        return command

    def sh(self, command: str, *, ok: tuple[int, ...] = (0,), timeout: float = 120) -> str:
        done = subprocess.run(["bash", "-c", self.localise(command)], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode in ok, f"{command!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def serve(self, command: str) -> None:
        """`./run.sh` in the background, until the banner's last line."""
        args = shlex.split(self.localise(command)) + ["--port", str(self.port)]
        self.proc = subprocess.Popen(args, cwd=self.root, env=self.env, stderr=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, text=True, start_new_session=True)
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                pytest.fail("./run.sh ended before serving:\n" + "".join(self.startup))
            self.startup.append(line)
            if line.lstrip().startswith("next "):  # printed as the server starts: wait until it answers
                self._wait_healthy(deadline)
                return
        pytest.fail("./run.sh did not serve within 10 minutes:\n" + "".join(self.startup))

    def _wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Clone]:
    wheels = readme.wheels_or_skip()
    tmp = tmp_path_factory.mktemp("clean-clone")
    root = readme.copy_checkout(tmp / "interlock")
    readme.bare_venv(root / ".venv", readme.shared_dependencies(tmp / "deps"))
    env = readme.offline_pip_env(wheels)
    env.update(INTERLOCK_UPSTREAM_OPENAI=upstream.url, INTERLOCK_UPSTREAM_ANTHROPIC=upstream.url,
               OPENAI_API_KEY="sk-readme", ANTHROPIC_API_KEY="sk-ant-readme")
    served = Clone(root, readme.free_port(), env)
    yield served
    served.stop()


def _run_block(clone: Clone, block: readme.Block) -> list[str]:
    """Run one block as a reader would: `./run.sh` serves, `export` sets the environment,
    Python blocks run in the clone's venv, other lines in bash.  Returns the outputs."""
    if block.lang == "python":
        return [clone.sh(f".venv/bin/python -c {shlex.quote(block.text)}")]
    outputs = []
    for command in block.commands():
        if command.startswith("./run.sh"):
            clone.serve(command)
        elif command.startswith("export "):
            name, _, value = command.removeprefix("export ").partition("=")
            clone.env[name] = clone.localise(value)
        else:
            outputs.append(clone.sh(command))
    return outputs


def _runs(clone: Clone, n: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        items = httpx.get(f"http://127.0.0.1:{clone.port}/api/runs").json()["items"]
        if len(items) >= n and all(r["calls"] for r in items):
            return list(items)
        time.sleep(0.2)
    raise AssertionError(f"expected {n} run(s) recorded")


def test_quickstart_from_a_clean_clone(clone: Clone, upstream: FakeUpstream) -> None:
    first, python, see = readme.named("quickstart")
    _run_block(clone, first)
    startup = "".join(clone.startup)
    for step in ("installing Interlock", "migrating the database", "starting the proxy"):  # .venv: made above
        assert f"run.sh: {step}" in startup
    assert f"openai → {upstream.url}" in startup and "database   sqlite+aiosqlite:///./interlock.db" in startup
    assert f"rules      9 rule(s) in 1 file(s) from {clone.root / 'rules'}" in startup
    assert clone.env["OPENAI_BASE_URL"] == f"http://127.0.0.1:{clone.port}/v1"

    _run_block(clone, python)
    assert len(upstream.requests) >= 2, "the quickstart's calls did not reach the upstream through the proxy"
    run_id = str(_runs(clone, 1)[0]["id"])
    see = readme.Block(see.name, see.lang, SAMPLE_RUN.sub(f"graph {run_id[:12]}", see.text))
    runs_out, graph_out = _run_block(clone, see)

    assert run_id in runs_out, "interlock runs must print whole, copyable run ids"
    assert f"run {run_id}" in graph_out and "continuation" in graph_out
    for block in readme.named("agents") + readme.named("see-calls"):
        outputs = _run_block(clone, block)
    assert '"outcome": "ok"' in outputs[0] and "last 2 calls" in outputs[1], outputs


def test_demo_blocks(clone: Clone) -> None:
    before = set(Path(tempfile.gettempdir()).glob("interlock-demo-*"))
    (demo,) = _run_block(clone, readme.named("demo")[0])
    assert "4 runs recovered" in demo and "1 calls" not in demo and "JSON per design" not in demo
    assert "concierge claude-haiku-4-5" in demo, "the Anthropic concierge shows a Claude model"
    assert set(Path(tempfile.gettempdir()).glob("interlock-demo-*")) == before, "the demo left its database"
    kept_demo, runs = _run_block(clone, readme.named("demo-kept")[0])
    assert (clone.root / "demo.db").is_file() and "4 runs" in runs


def test_migration_commands(clone: Clone) -> None:
    up, check, revision = _run_block(clone, readme.named("migrations")[0])
    assert "Generating" in revision
    for new in (clone.root / "migrations" / "versions").glob("*what_changed*"):
        new.unlink()


def test_rules_check_commands(clone: Clone) -> None:
    default, examples = _run_block(clone, readme.named("rules-check")[0])
    assert "OK" in default and "OK" in examples


def test_drill_command(clone: Clone) -> None:
    (command,) = readme.named("drill")[0].commands()
    out = clone.sh(command, ok=(1,))  # the example routes point at example hosts
    assert "drill human-review" in out and "not delivered" in out


def test_doctor_command(clone: Clone) -> None:
    (out,) = _run_block(clone, readme.named("doctor")[0])
    assert "ok    encodings" in out and "ok    database" in out and "all checks passed" in out


def test_dashboards_check_command(clone: Clone) -> None:
    (out,) = _run_block(clone, readme.named("dashboards")[0])
    assert "up to date" in out


def test_the_suite_commands_are_what_ci_runs() -> None:
    commands = readme.named("ci")[0].commands()
    assert commands == ["./run.sh", "./test.sh"]  # run.sh: the quickstart test; test.sh runs this suite
    assert "./test.sh" in (readme.ROOT / ".ci" / "run").read_text().splitlines()


def test_every_command_block_is_run_by_a_test() -> None:
    names = {b.name for b in readme.blocks()}
    shell_marked = sum(b.lang == "bash" for b in readme.blocks())
    assert shell_marked == readme.shell_fences(), "a shell block in README.md is not marked <!-- readme-test: NAME -->"
    assert names <= RUN_BY.keys(), f"README blocks no test runs: {sorted(names - RUN_BY.keys())}"
    assert all(callable(globals().get(test)) for test in RUN_BY.values())


def test_every_inline_interlock_command_exists() -> None:
    """`interlock ...` written in the prose names a real command (its --help answers)."""
    text = readme.README.read_text()
    mentioned = set(re.findall(r"`(?:\.venv/bin/)?interlock ([a-z][a-z -]*)", text))
    assert mentioned
    for words in mentioned:
        path = [w for w in words.split() if re.fullmatch(r"[a-z][a-z-]*", w)][:2]
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args([*path, "--help"])
        assert done.value.code == 0, f"`interlock {words}` in README.md is not a command"
