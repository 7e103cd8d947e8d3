from proxy.sse import SSESplitter


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
