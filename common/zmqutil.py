"""ZeroMQ socket set-up in one place: every socket option zingest uses is chosen here.

Stable parts bind (the gateway), dynamic parts connect (sinks). Linger is
always bounded so that closing a socket never hangs a process, and reconnects
back off exponentially up to a ceiling.
"""

from __future__ import annotations

import zmq

# Milliseconds a closing socket may spend delivering what it still holds.
DEFAULT_LINGER_MS = 1000
# Reconnect back-off: first retry after this many ms, doubling up to the max.
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 5000


def configure(sock: zmq.Socket, *, sndhwm: int | None = None, rcvhwm: int | None = None,
              linger_ms: int = DEFAULT_LINGER_MS) -> zmq.Socket:
    sock.setsockopt(zmq.LINGER, linger_ms)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    if sndhwm is not None:
        sock.setsockopt(zmq.SNDHWM, sndhwm)
    if rcvhwm is not None:
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
    return sock
