from proxy.sse import Oversized, SSESplitter


def test_events_split_across_arbitrary_chunk_boundaries() -> None:
    stream = b'event: message_start\ndata: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'
    for size in (1, 2, 7, 13, len(stream)):
        splitter = SSESplitter()
        events = []
        for i in range(0, len(stream), size):
            events += splitter.feed(stream[i : i + size])
        assert [e.data for e in events] == [b'{"a":1}', b'{"b":2}', b"[DONE]"]
        assert events[0].name == "message_start"
        assert b"".join(e.raw for e in events) == stream


def test_crlf_separated_events_are_recognised() -> None:
    events = SSESplitter().feed(b"data: x\r\n\r\ndata: y\r\n\r\n")
    assert [e.data for e in events] == [b"x", b"y"]


def test_unfinished_event_stays_in_tail() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b'data: {"partial"') == []
    assert splitter.tail() == b'data: {"partial"'


def test_lone_cr_ends_lines_and_events() -> None:
    events = SSESplitter().feed(b"event: a\rdata: x\r\rdata: y\r\r\n")
    assert [(e.name, e.data) for e in events] == [("a", b"x"), (None, b"y")]


def test_crlf_split_between_cr_and_lf_stays_one_line_end() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: x\r\n\r") == []
    [event] = splitter.feed(b"\ndata: y")
    assert event.raw == b"data: x\r\n\r\n" and event.data == b"x"


def test_event_held_on_a_trailing_cr_comes_out_on_close() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: x\r\r") == []
    assert [e.data for e in splitter.close()] == [b"x"]


def test_event_over_the_limit_passes_as_fragments_and_is_counted() -> None:
    splitter = SSESplitter(max_event_bytes=16)
    events = splitter.feed(b"data: " + b"x" * 40) + splitter.feed(b"y" * 40 + b"\n\ndata: ok\n\n")
    assert [e.data for e in events if not isinstance(e, Oversized)] == [b"ok"]
    assert splitter.oversized == 1
    assert b"".join(e.raw for e in events) == b"data: " + b"x" * 40 + b"y" * 40 + b"\n\ndata: ok\n\n"
    assert splitter.tail() == b""
