"""A minimal TensorBoard scalar writer with no dependency beyond the standard library.

TensorBoard reads ``events.out.tfevents.*`` files: TFRecord framing (length, masked CRC-32C of
the length, payload, masked CRC-32C of the payload) around ``Event`` protocol buffers. Scalars
need only four protobuf fields, written here by hand, so runs get event files without pulling in
TensorFlow, tensorboard or protobuf. :func:`read_scalars` reads them back (used by the tests).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

from ..errors import write_error

__all__ = ["EventWriter", "read_scalars"]


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _event(
    wall_time: float, step: int, *, file_version: str | None = None, summary: bytes | None = None
) -> bytes:
    out = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
    if file_version is not None:
        out += _field_bytes(3, file_version.encode())
    if summary is not None:
        out += _field_bytes(5, summary)
    return out


def _scalar_summary(tag: str, value: float) -> bytes:
    inner = _field_bytes(1, tag.encode()) + b"\x15" + struct.pack("<f", float(value))
    return _field_bytes(1, inner)


class EventWriter:
    """Append scalars to a TensorBoard event file in ``log_dir`` (``tensorboard --logdir``)."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self.path = self.log_dir / name
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            n = 1
            while (
                self.path.exists()
            ):  # a new file, never one written before (a resume, same second)
                self.path = self.log_dir / f"{name}.{n}"
                n += 1
            self._fh = open(self.path, "ab")
        except OSError as exc:
            raise write_error(self.path, exc) from None
        self._write(_event(time.time(), 0, file_version="brain.Event:2"))

    def _write(self, data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        try:
            self._fh.write(
                header
                + struct.pack("<I", _masked_crc(header))
                + data
                + struct.pack("<I", _masked_crc(data))
            )
        except OSError as exc:  # a full disk, a file-size limit
            raise write_error(self.path, exc) from None

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        """Record ``value`` under ``tag`` at ``step``."""
        self._write(_event(time.time(), int(step), summary=_scalar_summary(tag, value)))

    def add_scalars(self, prefix: str, values: dict, step: int, flush: bool = True) -> None:
        """Record every finite number in ``values`` as ``prefix/key``."""
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
                self.add_scalar(f"{prefix}/{key}", float(value), step)
        if flush:
            self.flush()

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as exc:
            raise write_error(self.path, exc) from None

    def close(self) -> None:
        if not self._fh.closed:
            try:
                self._fh.close()
            except OSError as exc:
                raise write_error(self.path, exc) from None


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _parse_fields(buf: bytes) -> list[tuple[int, int, object]]:
    pos, out = 0, []
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<d", buf, pos)[0], pos + 8
        elif wire == 5:
            value, pos = struct.unpack_from("<f", buf, pos)[0], pos + 4
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, wire, value))
    return out


def read_scalars(path: str | Path) -> list[tuple[str, int, float]]:
    """Read ``(tag, step, value)`` triples from an event file, checking every CRC."""
    data = Path(path).read_bytes()
    pos, out = 0, []
    while pos < len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack_from("<I", data, pos + 8)[0] != _masked_crc(header):
            raise ValueError(f"corrupt record header at byte {pos} of {path}")
        payload = data[pos + 12 : pos + 12 + length]
        if struct.unpack_from("<I", data, pos + 12 + length)[0] != _masked_crc(payload):
            raise ValueError(f"corrupt record at byte {pos} of {path}")
        pos += 16 + length
        step = 0
        for number, _, value in _parse_fields(payload):
            if number == 2:
                step = int(value)  # type: ignore[arg-type]
            elif number == 5:
                for _, _, val in _parse_fields(value):  # type: ignore[arg-type]
                    fields = {n: v for n, _, v in _parse_fields(val)}  # type: ignore[arg-type]
                    out.append((fields[1].decode(), step, float(fields[2])))  # type: ignore[union-attr,arg-type]
    return out
