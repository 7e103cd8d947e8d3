"""The canonical path: examples, then properties (hypothesis) over hostile spellings."""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.paths import PathError, canonicalise, encode_path
from proxy.providers import Router
from proxy.settings import load_settings

GUARDED = ("/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/messages/count_tokens")
PIECES = ["/", "//", ".", "..", "%2e", "%2E", "%2f", "%2F", "%3f", "%3F", "%23", "%5c", "\\", "%00", "%0a",
          "%25", "%252f", "%20", "%", "%zz", "%ff", "%c3%a9", "é", ";x=1", ":", "~", "v1", "chat",
          "completions", "messages", "count_tokens", "responses", "agents", "a", "x"]
spellings = st.lists(st.sampled_from(PIECES), max_size=14).map(lambda ps: ("/" + "".join(ps)).encode("utf-8"))
near_guarded = st.builds(lambda route, pre, post: (pre + route + post).encode("utf-8"),
                         st.sampled_from(GUARDED), st.sampled_from(["", "/", "/agents/a", "/x/..", "/.", "//"]),
                         st.sampled_from(["", "/", "%3Fx=1", "%23x", "/.", "/..", "%2f", "//", "%2e"]))
segment_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8).filter(
    lambda s: not re.search(r"[/?#\\\x7f]|%[0-9A-Fa-f]{2}", s) and s not in (".", ".."))
canonical_paths = st.lists(segment_text, max_size=6).map(lambda segs: "/" + "/".join(segs))


def lenient(path: str) -> str:
    """What the most forgiving upstream could resolve a path to: decoded, `\\` as `/`, cut at
    `?`/`#`, dot segments resolved, duplicate and trailing slashes dropped."""
    p = unquote(path).replace("\\", "/")
    p = re.split(r"[?#]", p, maxsplit=1)[0]
    p = posixpath.normpath("/" + p)
    return "/" + p.strip("/") if p.strip("/") else "/"


def accepted(raw: bytes) -> str | None:
    return accepted_pair(raw)[0]


def accepted_pair(raw: bytes) -> tuple[str | None, str | None]:
    try:
        return canonicalise(raw)
    except PathError:
        return None, None


def routed(raw: bytes) -> str:
    return canonicalise(raw)[0]


@pytest.mark.parametrize("raw, path", [
    (b"/v1/chat/completions", "/v1/chat/completions"),
    (b"/v1//chat/completions/", "/v1/chat/completions"),
    (b"//agents/a//v1/messages", "/agents/a/v1/messages"),
    (b"/", "/"),
    (b"/v1/files/a%20b%25c", "/v1/files/a b%c"),
    (b"/agents/caf%C3%A9/v1/models", "/agents/café/v1/models"),
    (b"/v1beta/models/gemini-1.5:generateContent", "/v1beta/models/gemini-1.5:generateContent"),
])
def test_harmless_spellings_fold_to_one_path(raw: bytes, path: str) -> None:
    assert routed(raw) == path


@pytest.mark.parametrize("raw, forward", [
    (b"/v1/chat/completions", "/v1/chat/completions"),
    (b"/v1//chat/completions/", "/v1/chat/completions"),
    (b"/model/anthropic.claude-v2%3A1/converse", "/model/anthropic.claude-v2%3A1/converse"),
    (b"/v1/files/a%20b%25c", "/v1/files/a%20b%25c"),
    (b"/agents/caf\xc3\xa9/v1/models", "/agents/caf%C3%A9/v1/models"),
    (b'/v1/files/a"b', "/v1/files/a%22b"),
])
def test_the_client_encoding_is_forwarded_as_received(raw: bytes, forward: str) -> None:
    """A signature over the path (AWS SigV4) survives; only empty segments are dropped."""
    assert canonicalise(raw)[1] == forward


@pytest.mark.parametrize("raw, why", [
    (b"/v1/chat/completions%3Fx=1", "encoded '?'"),
    (b"/v1/chat/completions%23x", "encoded '#'"),
    (b"/agents/a/..%2f..%2fv1/chat/completions", "encoded '/'"),
    (b"/v1/chat%5Ccompletions", "'\\'"),
    (b"/v1/./chat/completions", "'.' segment"),
    (b"/v1/x/%2e%2E/chat/completions", "'..' segment"),
    (b"/v1/chat/completions%00", "control character"),
    (b"/v1/chat/completions%0d%0aX: y", "control character"),
    (b"/v1/chat/completions%zz", "malformed percent-escape"),
    (b"/v1/chat%252Fcompletions", "double-encoded escape"),
    (b"/v1/%ff", "not valid UTF-8"),
    (b"v1/chat/completions", "must start with '/'"),
    (b"*", "must start with '/'"),
])
def test_ambiguous_spellings_are_refused_with_the_reason(raw: bytes, why: str) -> None:
    with pytest.raises(PathError, match=re.escape(why)):
        canonicalise(raw)


@given(st.one_of(spellings, near_guarded, st.binary(max_size=40)))
def test_canonical_path_is_a_fixed_point_of_forwarding(raw: bytes) -> None:
    path, forward = accepted_pair(raw)
    if path is not None and forward is not None:
        assert canonicalise(forward.encode("ascii")) == (path, forward)
        assert unquote(forward) == path


@given(st.one_of(spellings, near_guarded, st.binary(max_size=40)))
def test_canonical_path_has_no_ambiguous_spelling(raw: bytes) -> None:
    path = accepted(raw)
    if path is not None:
        assert path.startswith("/") and "//" not in path and (path == "/" or not path.endswith("/"))
        assert not re.search(r"[?#\\\x00-\x1f\x7f]", path)
        assert not {".", ".."} & set(path.split("/"))


@given(st.one_of(spellings, near_guarded))
def test_a_spelling_that_could_reach_a_guarded_route_is_refused_or_routed_there(raw: bytes) -> None:
    path, forward = accepted_pair(raw)
    if path is not None and forward is not None:
        assert lenient(raw.decode("utf-8")) == path
        assert lenient(forward) == path == lenient(unquote(forward)), "an upstream decoding twice"


@given(canonical_paths)
def test_a_decoded_path_encodes_to_itself(path: str) -> None:
    """What a server without `raw_path` gives: re-encoded, it routes where it decoded to."""
    encoded = encode_path(path)
    assert encoded.isascii() and not re.search(r"[?#\s]", encoded)
    assert unquote(encoded) == path == lenient(encoded)
    assert canonicalise(encoded.encode("ascii")) == (path, encoded)


@given(st.one_of(spellings, near_guarded))
def test_an_accepted_spelling_routes_like_its_canonical_form(raw: bytes) -> None:
    router = Router(load_settings().all_upstreams())
    path, forward = accepted_pair(raw)
    if path is not None and forward is not None:
        again = routed(forward.encode("ascii"))
        assert router.route(path) == router.route(again)
        assert router.route(path).operation == router.route(lenient(raw.decode("utf-8"))).operation
