"""Property-based tests of the SSE splitter (proxy/sse.py): chunking never changes the events,
any bytes are survivable, and every line ending the SSE spec allows is understood."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.sse import Event, Oversized, SSESplitter

EOLS = (b"\n", b"\r\n", b"\r")
FIELD_TEXT = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


def feed_all(pieces: list[bytes], max_event_bytes: int | None = None) -> tuple[list[Event], SSESplitter]:
    splitter = SSESplitter() if max_event_bytes is None else SSESplitter(max_event_bytes)
    events: list[Event] = []
    for piece in pieces:
        events += splitter.feed(piece)
    return events + splitter.close(), splitter


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[tuple[str | None, bytes]]]:
    """A valid stream with mixed line endings, and the (event name, data) each event must give."""
    out: list[bytes] = []
    expected: list[tuple[str | None, bytes]] = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.none() | FIELD_TEXT.filter(lambda b: b[:1] != b" ").map(lambda b: b.decode("utf-8", "replace")))
        datas = draw(st.lists(FIELD_TEXT, min_size=1, max_size=3))
        lines: list[bytes] = []
        if draw(st.booleans()):
            lines.append(b": comment")
        if name is not None:
            lines.append(b"event: " + name.encode())
        for d in datas:
            lines.append(b"data: " + d if draw(st.booleans()) else b"data:" + d if d[:1] != b" " else b"data: " + d)
        eol = b""
        for line in lines:
            eol = draw(st.sampled_from(EOLS))
            out.append(line + eol)
        # A CR then an LF is one line end (CRLF), not a blank line.
        out.append(draw(st.sampled_from(EOLS[1:] if eol == b"\r" else EOLS)))
        expected.append((name, b"\n".join(datas)))
    return b"".join(out), expected


@given(streams(), st.lists(st.integers(min_value=0), max_size=12))
@settings(max_examples=400, deadline=None)
def test_any_chunking_gives_the_events_of_one_chunk(stream: tuple[bytes, list[object]], cuts: list[int]) -> None:
    data, _ = stream
    whole, _ = feed_all([data])
    pieces, _ = feed_all(split_at(data, cuts))
    assert pieces == whole
    assert b"".join(e.raw for e in pieces) == data


@given(streams())
@settings(max_examples=400, deadline=None)
def test_crlf_cr_and_lf_line_ends_give_the_spec_fields(stream: tuple[bytes, list[tuple[str | None, bytes]]]) -> None:
    data, expected = stream
    events, _ = feed_all([data])
    assert [(e.name, e.data) for e in events] == expected


@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=12))
@settings(max_examples=600, deadline=None)
def test_arbitrary_bytes_never_raise_and_are_all_accounted_for(data: bytes, cuts: list[int]) -> None:
    events, splitter = feed_all(split_at(data, cuts))
    whole, _ = feed_all([data])
    assert events == whole
    assert b"".join(e.raw for e in events) + splitter.tail() == data


@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=12), st.integers(1, 64))
@settings(max_examples=600, deadline=None)
def test_oversized_events_come_out_as_fragments_within_the_limit(data: bytes, cuts: list[int], limit: int) -> None:
    events, splitter = feed_all(split_at(data, cuts), max_event_bytes=limit)
    assert b"".join(e.raw for e in events) + splitter.tail() == data
    assert all(e.data == b"" and e.name is None for e in events if isinstance(e, Oversized))
    assert len(splitter.tail()) <= limit
    assert [(e.name, e.data) for e in events if not isinstance(e, Oversized)] == [
        (e.name, e.data) for e in feed_all([data], max_event_bytes=limit)[0] if not isinstance(e, Oversized)
    ]
