"""A misbehaving stand-in for `chatspace-encoder serve`, for protocol tests.

The supervisor starts it as `fake_encoder.py serve --socket PATH --encoder-id N ...` (through
CHATSPACE_ENCODER); FAKE_MODE says how it misbehaves:
  version   Hello with protocol version 99
  secret    Hello with a wrong secret
  garbage   16 bytes of garbage as a frame
  oversize  a length prefix of 1 GiB
  truncated half a frame, then close
It prints what the supervisor answered (if anything) to stderr and exits 0.
"""

import os
import socket
import struct
import sys

# chatspace_proto::PROTO_VERSION: what the supervisor speaks.
PROTO_VERSION = 2


def varint(n):
    # bincode 1 varint: < 251 is one byte; else 251 + u16, 252 + u32, 253 + u64 (little endian)
    if n < 251:
        return bytes([n])
    if n < 2**16:
        return b"\xfb" + struct.pack("<H", n)
    if n < 2**32:
        return b"\xfc" + struct.pack("<I", n)
    return b"\xfd" + struct.pack("<Q", n)


def hello(version, secret):
    s = secret.encode()
    body = varint(0) + varint(version) + varint(len(s)) + s + varint(0) + varint(os.getpid())
    return struct.pack("<I", len(body)) + body


def main():
    sock_path = sys.argv[sys.argv.index("--socket") + 1]
    mode = os.environ["FAKE_MODE"]
    secret = os.environ.get("CHATSPACE_SECRET", "")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    frames = {
        "version": hello(99, secret),
        "secret": hello(PROTO_VERSION, "not-the-secret"),
        "garbage": struct.pack("<I", 16) + b"\xff" * 16,
        "oversize": struct.pack("<I", 1 << 30),
        "truncated": hello(PROTO_VERSION, secret)[:6],
    }
    s.sendall(frames[mode])
    if mode == "truncated":
        s.close()
        return
    s.settimeout(10)
    try:
        reply = s.recv(4096)
    except OSError:
        reply = b""
    sys.stderr.write("supervisor answered %r\n" % reply[:80])


if __name__ == "__main__":
    main()
