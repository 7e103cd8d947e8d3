"""Conversation prefixes as a hash chain: which earlier call does this request continue?

    seed = agent key (or the head of the call a previous_response_id names)
    h1 = H(seed ‖ atom1)   h2 = H(h1 ‖ atom2)   ...   hn = H(hn-1 ‖ atomn)      request
                                                        head = H(hn ‖ out1 ‖ ... ‖ outm)  + response

A later request of the same agent whose atoms start with atom1..n, out1..m has `head` among
its prefix hashes: it continues that call, and only its atoms after the match are new.
Atoms are what survives re-serialisation by any SDK: leading system/developer messages are
dropped (they are part of the agent's identity), an assistant turn becomes its text plus one
atom per tool call, so a Responses API history (one item per function call), a Chat history
(tool calls inside the message) and an Anthropic history (text and tool_use blocks) of the
same conversation give the same atoms.  Costs one blake2b per atom: safe on the request path.
`ChainCache` remembers the steps over long atoms, so a resent long message (a 100k-token
prompt, a RAG document, a long history) is hashed once, not on every call (~1 ms per 500 kB).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from proxy.call import Completion, Message
from proxy.lru import CharLRU

_DIGEST = 16


@dataclass(frozen=True, slots=True)
class Atom:
    """One unit of conversation.  role: u (user) a (assistant text) c (tool call)
    t (tool result) s (system or developer message after the first user turn)."""

    role: str
    text: str
    tool_id: str | None
    index: int  # position of the message it came from in Call.messages (-1: the response)

    def encode(self) -> bytes:
        return f"{self.role}\x1f{self.tool_id or ''}\x1f{self.text}".encode("utf-8", "surrogatepass")


def atoms(messages: list[Message]) -> list[Atom]:
    out: list[Atom] = []
    leading = True
    for i, m in enumerate(messages):
        if leading and m.role in ("system", "developer"):
            continue
        leading = False
        out.extend(_message_atoms(m, i))
    return out


def output_atoms(completion: Completion) -> list[Atom]:
    return _turn("a", completion.text, completion, -1)


def _message_atoms(m: Message, i: int) -> list[Atom]:
    if m.role == "assistant":
        return _turn("a", m.text, m, i)
    if m.role == "tool":
        return [Atom("t", m.text.strip(), m.tool_call_id or "", i)]
    if m.role in ("system", "developer"):
        return [Atom("s", m.text.strip(), None, i)]
    return [Atom("u", m.text.strip(), None, i)]


def _turn(role: str, text: str, holder: Message | Completion, i: int) -> list[Atom]:
    out = [Atom(role, text.strip(), None, i)] if text.strip() else []
    for tc in holder.tool_calls:
        out.append(Atom("c", tool_atom_text(tc.name, tc.arguments), tc.id, i))
    return out


def canonical_arguments(arguments: str) -> str:
    """Tool-call arguments as compact sorted JSON: clients re-serialise them when they send the
    history back (LangChain writes `{"a": 1}` where the model wrote `{"a":1}`)."""
    text = arguments.strip()
    if not text.startswith("{"):
        return text
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        return text


def seed(agent_key: str) -> bytes:
    return hashlib.blake2b(agent_key.encode(), digest_size=_DIGEST).digest()


def chain(start: bytes, items: list[Atom]) -> list[bytes]:
    """Prefix hashes: result[i] covers items[: i + 1]."""
    out: list[bytes] = []
    h = start
    for atom in items:
        h = _step(h, atom)
        out.append(h)
    return out


def _step(h: bytes, atom: Atom) -> bytes:
    return hashlib.blake2b(h + atom.encode(), digest_size=_DIGEST).digest()


_StepKey = tuple[bytes, str, str | None, int, str]


class ChainCache:
    """`chain` that remembers its steps over atoms of at least `min_chars` characters.

    A step is keyed by the digest before it and the atom (role, tool id, length, first
    characters) and kept with the atom's text, which a hit must equal (a memcmp, ~50x faster
    than the blake2b): results are exactly `chain`'s.  Holds references to at most
    `max_chars` characters of text, least recently used out first.  Called from the linker
    (background) and the RunResolver (request path); no I/O, never raises, not thread-safe."""

    def __init__(self, *, min_chars: int = 4096, max_chars: int = 8_000_000) -> None:
        self.min_chars = min_chars
        self._steps: CharLRU[_StepKey, tuple[str, bytes]] = CharLRU(max_chars)

    @property
    def chars(self) -> int:
        """Characters of text held."""
        return self._steps.chars

    def chain(self, start: bytes, items: list[Atom]) -> list[bytes]:
        """Prefix hashes: result[i] covers items[: i + 1] (the same as `chain`)."""
        out: list[bytes] = []
        h = start
        for atom in items:
            h = self._step(h, atom) if len(atom.text) >= self.min_chars else _step(h, atom)
            out.append(h)
        return out

    def _step(self, h: bytes, atom: Atom) -> bytes:
        text = atom.text
        key = (h, atom.role, atom.tool_id, len(text), text[:64])
        hit = self._steps.get(key)
        if hit is not None and hit[0] == text:
            return hit[1]
        digest = _step(h, atom)
        self._steps.put(key, (text, digest), len(text))  # same key, other text: replaced
        return digest


def head_key(digest: bytes) -> str:
    return "h:" + digest.hex()


def input_key(digest: bytes) -> str:
    return "i:" + digest.hex()


def response_key(response_id: str) -> str:
    return "r:" + response_id


def tool_key(tool_call_id: str, call: str = "") -> str:
    """A tool call's key; with `call` (the "c" atom's text: name and canonical arguments) the id is
    tied to what was called, so a server that numbers its ids per conversation (`call_1`) does
    not tie two conversations together."""
    if not call:
        return "t:" + tool_call_id
    return "t:" + tool_call_id + "\x1f" + hashlib.blake2b(call.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def tool_atom_text(name: str, arguments: str) -> str:
    return f"{name}\x1f{canonical_arguments(arguments)}"
