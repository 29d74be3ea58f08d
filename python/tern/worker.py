"""A node's Python worker process: ``python -m tern.worker``, started by the node (never
imported by users). It runs users' functions one task at a time, reading tasks on stdin and
answering on stdout in the frames ``crates/workers/src/wire.rs`` describes; keep the two in
step. Whatever the user's code prints goes to stderr (the node's log), never into the
protocol.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
import sys
import traceback
from typing import Any, BinaryIO, Optional


def read_frame(stream: BinaryIO) -> Optional[bytes]:
    header = stream.read(4)
    if len(header) < 4:
        return None
    (length,) = struct.unpack(">I", header)
    body = stream.read(length)
    if len(body) < length:
        return None
    return body


def write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(struct.pack(">I", len(payload)))
    stream.write(payload)
    stream.flush()


def decode_input(frame: bytes) -> Any:
    tag, rest = frame[:1], frame[1:]
    if tag == b"p":
        return pickle.loads(rest)
    if tag == b"a":
        import pyarrow as pa
        import pyarrow.ipc

        return pyarrow.ipc.open_stream(pa.py_buffer(rest)).read_all().to_pandas()
    if tag == b"j":
        return json.loads(rest)
    raise ValueError(f"an input tagged {tag!r}")


def encode_output(value: Any) -> bytes:
    """A pandas DataFrame or pyarrow Table as Arrow (a table other tasks and SQL can read),
    plain numbers, strings, booleans and None as JSON (what built-in kernels read), anything
    else pickled."""
    try:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.ipc
    except ImportError:  # pragma: no cover - the package needs both
        pd = pa = None
    if pa is not None and isinstance(value, (pd.DataFrame, pa.Table)):
        table = value if isinstance(value, pa.Table) else pa.Table.from_pandas(value, preserve_index=False)
        sink = pa.BufferOutputStream()
        with pyarrow.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return b"a" + sink.getvalue().to_pybytes()
    plain = value is None or type(value) in (bool, str)
    plain |= type(value) is int and -(2**63) <= value < 2**63
    plain |= type(value) is float and math.isfinite(value)
    if plain:
        return b"j" + json.dumps(value, ensure_ascii=False).encode()
    import cloudpickle

    return b"p" + cloudpickle.dumps(value)


def main() -> None:
    tasks = sys.stdin.buffer
    # The protocol keeps the real stdout; print() and the like go to stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    while True:
        function = read_frame(tasks)
        count = read_frame(tasks)
        if function is None or count is None:
            return  # the node closed our stdin: it is done with us
        (n,) = struct.unpack(">I", count)
        frames = [read_frame(tasks) for _ in range(n)]
        if any(f is None for f in frames):
            return
        try:
            fn, kwargs = pickle.loads(function)
            args = [decode_input(f) for f in frames]
            answer = encode_output(fn(*args, **kwargs))
        except BaseException:  # the user's exception, whatever it is, fails the task
            answer = b"e" + traceback.format_exc().encode("utf-8", "replace")
        write_frame(answers, answer)


if __name__ == "__main__":
    main()
