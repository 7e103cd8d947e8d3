"""ASGI scope extensions Interlock's own server (proxy/server.py) offers the app.

The names live here, beneath both, so the app side (the relay) reads them without importing the
server: `scope["extensions"][DISCONNECT_HOOK](callback)` asks for `callback()` when the client
leaves before the response is complete (None withdraws it); no task has to sit in receive().
Under another ASGI server the extension is absent and the app falls back to receive().
"""

DISCONNECT_HOOK = "interlock.disconnect"
