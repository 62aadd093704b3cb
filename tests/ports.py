"""Free TCP ports for the servers the tests start (Ray nodes, MLflow, optuna-dashboard).

A port found free and closed again can be taken by someone else before the server binds it. Two
sources of that race are removed here: ports come from below Linux's ephemeral range (32768-60999),
which the kernel hands to outgoing connections and to bind(0), so no client connection or other
bind(0) takes them meanwhile; and no port is handed out twice in one test session, so a fixture that
asks for several ports before starting anything never gets the same one twice.
"""

from __future__ import annotations

import random
import socket

_LOW, _HIGH = 20000, 32000
_given: set[int] = set()
_rng = random.Random()


def free_port() -> int:
    for _ in range(500):
        port = _rng.randrange(_LOW, _HIGH)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port found between {_LOW} and {_HIGH}")
