"""One canonical request path, computed once from the raw bytes before anything routes on it.

    raw_path ──▶ canonicalise() ──┬─▶ PathError: refused with a 400 (nothing routed, nothing sent)
      (bytes as                   │     encoded `/` `?` `#` `\\`, control bytes (also encoded),
       received)                  │     `.` / `..` segments (also encoded), double-encoded escapes
                                  │     (`%252F`), bad %-escapes, bad UTF-8
                                  └─▶ (path, forward): empty segments (`//`, a trailing `/`) dropped
                                        path     decoded: routed on (relay, provider, guards, records)
                                        forward  the same segments as the client encoded them (a
                                                 signature over the path survives), bytes outside
                                                 RFC 3986 pchar escaped; decoding it gives `path`

Why refuse some spellings and fold others: an encoded delimiter or a dot segment makes the path
we route differ from the resource an upstream resolves (`/v1/chat/completions%3Fx=1` was routed
as a generic call, unguarded, and became `/v1/chat/completions?x=1` upstream), so those are
refused.  Duplicate and trailing slashes only come from base URLs joined carelessly, so they are
folded, and the folded path is both what is routed and what is forwarded.  A double-encoded escape
is refused too: an upstream (or a gateway in front of it) that decodes twice would resolve
`/v1/chat%252Fcompletions` to the chat route we did not guard.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_from_bytes, unquote_to_bytes

_SAFE = "/!$&'()*+,;=:@-._~"  # sub-delims and pchar punctuation (RFC 3986): never re-encoded
_PLAIN_BYTES = (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" + _SAFE.encode())
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_FORBIDDEN = re.compile(rb"[\x00-\x1f\x7f/?#\\]|%[0-9A-Fa-f]{2}")  # in a decoded segment
_NAMES = {b"/": "an encoded '/'", b"?": "an encoded '?'", b"#": "an encoded '#'", b"\\": "a '\\'"}


class PathError(ValueError):
    """The request path cannot be routed safely; the message says why (shown to the client)."""


def canonicalise(raw: bytes) -> tuple[str, str]:
    """(path to route on, path to forward) from the raw request-target path.  Raises PathError."""
    if _plain(raw):
        path = raw.decode("ascii")
        return path, path
    if not raw.startswith(b"/"):
        raise PathError("the path must start with '/'")
    segments = [s for s in raw.split(b"/") if s]
    decoded = "/" + "/".join([_segment(s) for s in segments])
    return decoded, "/" + "/".join([quote_from_bytes(s, safe=_SAFE + "%") for s in segments])


def encode_path(path: str) -> str:
    """A decoded path percent-encoded (for a server that gives no `raw_path`)."""
    if path.isascii() and not path.encode("ascii").translate(None, _PLAIN_BYTES):
        return path
    return quote(path, safe=_SAFE)


def _plain(raw: bytes) -> bool:
    """Already canonical and plain ASCII (nearly every request): only RFC 3986 pchar characters,
    no escape, no empty or dot segment, no trailing slash."""
    return (raw[:1] == b"/" and raw[-1:] != b"/" and not raw.translate(None, _PLAIN_BYTES)
            and b"//" not in raw and b"/." not in raw)


def _segment(raw: bytes) -> str:
    if _BAD_ESCAPE.search(raw):
        raise PathError("the path has a malformed percent-escape")
    decoded = unquote_to_bytes(raw) if b"%" in raw else raw
    if decoded in (b".", b".."):
        raise PathError(f"the path has a {decoded.decode()!r} segment")
    bad = _FORBIDDEN.search(decoded)
    if bad is not None:
        found = bad.group()
        what = "a double-encoded escape" if len(found) == 3 else _NAMES.get(found, "a control character")
        raise PathError(f"the path has {what}")
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise PathError("the path is not valid UTF-8 once decoded") from None
