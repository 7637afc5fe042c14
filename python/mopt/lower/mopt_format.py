"""The model.mopt container: a 64-byte header, the JSON program, then one weight blob.

    0   char[8] "MOPTPROG"
    8   u32 format version          12  u32 flags (bit 0: needs the Python fallback)
    16  u64 JSON offset             24  u64 JSON size
    32  u64 blob offset (64-aligned) 40 u64 blob size
    48  16 reserved bytes

Every weight inside the blob starts on a 64-byte boundary, so the runtime can mmap the file and
use weights in place. csrc/include/mopt/program.h reads the same layout.

Version 2 is version 1 plus float32 constants stored as float16 (`"storage": "f16"` in the
constant's entry, `--fp16`); a program without them is still written as version 1, so runtimes
that predate float16 storage keep reading it, and refuse (rather than misread) one with it.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mopt.errors import InvalidModelError
from mopt.ir.dtypes import c_contiguous

MAGIC = b"MOPTPROG"
FORMAT_VERSION = 1  # a program without float16-stored constants
FORMAT_VERSION_F16 = 2  # one with them
READABLE_VERSIONS = (FORMAT_VERSION, FORMAT_VERSION_F16)
FLAG_NEEDS_FALLBACK = 1
HEADER = struct.Struct("<8sIIQQQQ16x")
ALIGN = 64


def align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


def write(out: BinaryIO, program: dict[str, Any], chunks: Iterable[tuple[int, bytes | np.ndarray]], blob_size: int, flags: int,
          version: int = FORMAT_VERSION) -> int:
    """Streams a program to `out`; chunks are (offset in blob, data) in increasing offset order."""
    text = json.dumps(program, separators=(",", ":"), allow_nan=True).encode("utf-8")
    json_off = HEADER.size
    blob_off = align(json_off + len(text))
    out.write(HEADER.pack(MAGIC, version, flags, json_off, len(text), blob_off, blob_size))
    out.write(text)
    out.write(b"\0" * (blob_off - json_off - len(text)))
    pos = 0
    for offset, data in chunks:
        if offset < pos:
            raise ValueError("blob chunks overlap")
        out.write(b"\0" * (offset - pos))
        # as raw bytes: memoryview refuses ml_dtypes element types (bfloat16, float8) and empty shapes
        raw = c_contiguous(data).reshape(-1).view(np.uint8) if isinstance(data, np.ndarray) else memoryview(data).cast("B")
        out.write(raw.data if isinstance(raw, np.ndarray) else raw)
        pos = offset + raw.nbytes
    out.write(b"\0" * (blob_size - pos))
    return blob_off + blob_size


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The header and the JSON program of a .mopt file, without mapping its weights."""
    p = Path(path)
    with p.open("rb") as f:
        head = f.read(HEADER.size)
        if len(head) < HEADER.size or head[:8] != MAGIC:
            raise InvalidModelError(f"'{p}' is not a mopt program (bad magic bytes)")
        _magic, version, flags, json_off, json_size, blob_off, blob_size = HEADER.unpack(head)
        if version not in READABLE_VERSIONS:
            raise InvalidModelError(f"'{p}' has format version {version}; this mopt reads {' and '.join(map(str, READABLE_VERSIONS))}")
        size = p.stat().st_size
        if json_off + json_size > size or blob_off + blob_size > size:
            raise InvalidModelError(f"'{p}' is truncated")
        f.seek(json_off)
        program = json.loads(f.read(json_size))
    return {
        "version": version,
        "flags": flags,
        "json_offset": json_off,
        "json_size": json_size,
        "blob_offset": blob_off,
        "blob_size": blob_size,
        "program": program,
        "file_size": size,
    }


def is_mopt_file(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == MAGIC
    except OSError:
        return False
