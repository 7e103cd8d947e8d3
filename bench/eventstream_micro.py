"""Event-stream splitting (Bedrock ConverseStream): Interlock's `EventStreamSplitter` against botocore's
`EventStreamBuffer` on the same frames, CPU µs per event (alternated runs).

    .venv/bin/python bench/eventstream_micro.py [--streams 2000]

Why Interlock has its own (style §11 asks for a measurement): botocore is a test dependency, not a
runtime one, and its buffer validates both CRCs and decodes every header (the client checks them;
the relay only needs the event type and payload), and raises on a bad frame where the relay must
pass the bytes on and count them.
"""

from __future__ import annotations

import argparse
import time

import orjson
from botocore.eventstream import EventStreamBuffer

from proxy.providers.bedrock import EventStreamSplitter, frame

HEADERS = [(":event-type", "contentBlockDelta"), (":content-type", "application/json"), (":message-type", "event")]
EVENTS = [frame(HEADERS, orjson.dumps({"contentBlockIndex": 0, "delta": {"text": "word "}, "p": "abcdefgh"}))] * 50
READS = [b"".join(EVENTS[i : i + 10]) for i in range(0, 50, 10)]  # 10 frames per read, as in relay_micro


def _interlock() -> int:
    s = EventStreamSplitter(1 << 23)
    return sum(len(s.feed(r)) for r in READS)


def _botocore() -> int:
    b, n = EventStreamBuffer(), 0
    for r in READS:
        b.add_data(r)
        n += sum(1 for _ in b)
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=2000)
    args = p.parse_args()
    for label, fn in (("interlock", _interlock), ("botocore", _botocore)) * 2:
        t = time.process_time()
        for _ in range(args.streams):
            assert fn() == len(EVENTS)
        print(f"{label:10} {(time.process_time() - t) / args.streams / len(EVENTS) * 1e6:6.2f} µs/event")


if __name__ == "__main__":
    main()
