"""2 replicas × 2 workers behind HAProxy (deploy/haproxy.cfg), real openai SDK, real PostgreSQL
and Redis: served, streamed, recorded once, and surviving the loss of a replica."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import openai

from tests.fake_upstream import FakeUpstream, Reply
from tests.topology import Topology


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0, timeout=20)


def _ask(client: openai.OpenAI, model: str, *, stream: bool = False) -> str:
    msgs = [{"role": "user", "content": f"question for {model}"}]
    if stream:
        parts = client.chat.completions.create(model=model, messages=msgs, stream=True)  # type: ignore[arg-type]
        return "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
    r = client.chat.completions.create(model=model, messages=msgs)  # type: ignore[arg-type]
    return r.choices[0].message.content or ""


def _requests_served(url: str) -> float:
    """Calls a replica counted, from its merged /metrics (all of its workers)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("gen_ai_client_operation_duration_seconds_count"))


def test_two_replicas_answer_the_sdk_and_record_every_call_once(topology: Topology) -> None:
    topo = topology
    client = _client(topo.url)
    models = [f"gpt-r-{i}" for i in range(24)]
    for i, model in enumerate(models):
        assert _ask(client, model, stream=i % 2 == 1) == f"ok: question for {model}"

    rows = topo.wait_recorded(len(models))
    counts = collections.Counter(r["model_requested"] for r in rows)
    assert counts == dict.fromkeys(models, 1)  # each answered call stored once, none invented
    assert all(_requests_served(r.direct) > 0 for r in topo.replicas)  # round-robin reached both


def test_haproxy_relays_a_stream_as_it_comes(topology: Topology, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["first ", "second ", "third"], gate_after=2))  # role chunk + "first "
    stream = _client(topology.url).chat.completions.create(
        model="gpt-s", messages=[{"role": "user", "content": "go"}], stream=True)
    got = []
    for chunk in stream:  # "first " arrives while the upstream still holds the rest back
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            got.append(text)
            if len(got) == 1:
                upstream.release()
    assert got == ["first ", "second ", "third"]


def test_metrics_of_a_replica_merge_all_of_its_workers(topology: Topology) -> None:
    topo = topology
    client = _client(topo.replicas[0].direct)
    for i in range(12):
        _ask(client, f"gpt-m-{i}")
    text = httpx.get(topo.replicas[0].direct + "/metrics", timeout=10).text
    assert "interlock_workers 2.0" in text and "interlock_workers_reporting 2.0" in text
    assert _requests_served(topo.replicas[0].direct) == 12  # whichever worker answers the scrape


def test_a_killed_worker_is_restarted_by_its_supervisor(topology: Topology) -> None:
    topo = topology
    replica = topo.replicas[1]
    before = replica.worker_pids()
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = replica.worker_pids()
        if len(now) == 2 and before[0] not in now:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"worker {before[0]} was not replaced: {replica.worker_pids()}")
    replica.wait_ready()
    client = _client(replica.direct)
    for i in range(8):  # both workers answer again (the shared socket reaches the new one too)
        assert _ask(client, f"gpt-w-{i}") == f"ok: question for gpt-w-{i}"
    assert "restarting it" in replica.log.read_text()


class _Load:
    """Threads calling through HAProxy until stopped; every answer kept with its time."""

    def __init__(self, url: str, threads: int = 6) -> None:
        self.url = url
        self.answered: list[tuple[str, float]] = []
        self.failed = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)]

    def _run(self, t: int) -> None:
        client, n = _client(self.url), 0
        while not self._stop.is_set():
            model, n = f"gpt-k-{t}-{n}", n + 1
            try:
                ok = _ask(client, model, stream=n % 3 == 0) == f"ok: question for {model}"
            except openai.APIError:
                ok = False
            if ok:
                self.answered.append((model, time.monotonic()))
            else:
                self.failed += 1

    def __enter__(self) -> _Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answered) < n:
            assert time.monotonic() < deadline, f"only {len(self.answered)} answers"
            time.sleep(0.02)


def test_killing_a_replica_under_load_loses_no_answered_call(tmp_path: Path, upstream: FakeUpstream) -> None:
    with Topology(tmp_path, upstream.url, replicas=2, workers=2) as topo:
        victim = topo.replicas[0]
        # its writer holds calls for a minute: what it answered reaches PostgreSQL only through its WAL
        victim.stop()
        victim.start(env={"INTERLOCK_WRITER_FLUSH_INTERVAL_S": "60", "INTERLOCK_WRITER_BATCH_SIZE": "100000"})
        with _Load(topo.url) as load:
            load.wait_for(150)
            victim.kill()
            killed_at = time.monotonic()
            time.sleep(3)
            load.wait_for(len(load.answered) + 50)  # the other replica carries on alone
        answered = dict(load.answered)
        after_kill = [m for m, t in load.answered if t > killed_at + 1.0]
        assert len(after_kill) >= 50, "the surviving replica did not keep serving"
        assert load.failed <= 6 * 2, f"{load.failed} calls failed: more than those in flight at the kill"

        before_restart = {r["model_requested"] for r in topo.calls()}
        victim.start()  # same port and spool directories: its workers replay their WAL
        settled = [m for m, t in answered.items() if t < killed_at - 0.2]  # older than the WAL's group commit
        deadline = time.monotonic() + 60
        while True:
            rows = topo.calls()
            stored = collections.Counter(r["model_requested"] for r in rows)
            if all(stored[m] for m in answered) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    missing = [m for m in settled if not stored[m]]
    assert not missing, f"{len(missing)} answered calls lost: {missing[:5]}"
    assert not [m for m, c in stored.items() if c > 1], "a replayed call was stored twice"
    recovered = [m for m in answered if m not in before_restart and stored[m]]
    assert recovered, "nothing came back from the WAL: the test did not exercise the replay"
