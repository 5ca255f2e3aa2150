"""A hashing process: ``python -m ocppgw.auth.hash_child``, spawned by ``ocppgw.auth.hash_workers``.

It lowers its own priority first (``hash_workers.low_priority``), then answers one job at a time:
each job is a 4-byte big-endian length and a pickle of ``(function, args)`` on standard input, each
answer the same framing around ``(True, result)`` or ``(False, exception)`` on standard output. End of
input ends the process. Only the gateway that spawned it writes to it (a pipe, not a socket), so the
pickles are trusted.
"""

from __future__ import annotations

import pickle
import sys
from typing import BinaryIO

from ocppgw.auth.hash_workers import HEADER, low_priority


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer jobs from ``requests`` on ``answers`` until ``requests`` ends."""
    while True:
        header = _read_exactly(requests, HEADER.size)
        if header is None:
            return
        (length,) = HEADER.unpack(header)
        body = _read_exactly(requests, length)
        if body is None:
            return
        function, args = pickle.loads(body)
        try:
            answer = (True, function(*args))
        except Exception as error:  # sent back: the gateway raises it in the job's Deferred
            answer = (False, error)
        try:
            data = pickle.dumps(answer, pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            data = pickle.dumps((False, RuntimeError(f"unpicklable answer: {error!r}")))
        answers.write(HEADER.pack(len(data)) + data)
        answers.flush()


def main() -> None:
    low_priority()
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
