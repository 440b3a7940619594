"""Read W&B offline run files (``run-*.wandb``) without network: their history metrics.

The file is a 7-byte header then LevelDB-log framed records (32 KiB blocks; each chunk has a
4-byte CRC, 2-byte length, 1-byte type: 1 full, 2 first, 3 middle, 4 last), each record a
``wandb_internal_pb2.Record`` protobuf.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7


def _chunks(data: bytes) -> Iterator[bytes]:
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # block tail too short for a header: zero padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        body = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            yield body
        elif kind == 2:
            pending = body
        elif kind == 3:
            pending += body
        elif kind == 4:
            yield pending + body


def history(path: Path) -> dict[str, Any]:
    """The last logged value of every history key in one offline run file."""
    from wandb.proto import wandb_internal_pb2 as pb

    values: dict[str, Any] = {}
    for raw in _chunks(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values
