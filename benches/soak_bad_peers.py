#!/usr/bin/env python3
"""Misbehaving peers for benches/soak.sh: until DEADLINE (a Unix time), keeps CONCURRENCY
connections at a time doing one fault each, round robin, against ws://HOST:PORT/PATH, and
counts what the server answered (close code, HTTP status, or a dropped connection) per fault.

    soak_bad_peers.py HOST PORT PATH DEADLINE CONCURRENCY REPORT.json

Standard library only; loopback only. Every fault ends by itself within about 15 s.
"""
import json
import os
import signal
import socket
import struct
import sys
import threading
import time

HOST, PORT, PATH = sys.argv[1], int(sys.argv[2]), sys.argv[3]
DEADLINE, CONCURRENCY, REPORT = float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
META = b'{"event":"websocket:connected","content-type":"audio/l16;rate=8000"}'
UPGRADE = (
    f"GET {PATH} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()


def frame(opcode, payload, fin=True):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def connect(timeout=15, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connecting: the window
    s.settimeout(timeout)
    s.connect((HOST, PORT))
    return s


def upgraded(rcvbuf=None):
    s = connect(rcvbuf=rcvbuf)
    s.sendall(UPGRADE)
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        chunk = s.recv(1)
        if not chunk:
            raise ConnectionError("closed during upgrade")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))
    return s


def call(rcvbuf=None):
    """An upgraded connection that has sent its 8 kHz metadata."""
    s = upgraded(rcvbuf)
    s.sendall(frame(1, META))
    return s


def close_code_after(s, frames):
    """Sends `frames`; the close code the server answers, or 'dropped' if it closed first."""
    try:
        for f in frames:
            s.sendall(f)
    except OSError:
        return "dropped"
    return read_close(s)


def read_close(s):
    """The close code the server sends, or 'dropped'."""
    try:
        while True:
            h = s.recv(2)
            if len(h) < 2:
                return "dropped"
            n = h[1] & 0x7F
            if n == 126:
                n = struct.unpack(">H", s.recv(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", s.recv(8))[0]
            payload = b""
            while len(payload) < n:
                chunk = s.recv(n - len(payload))
                if not chunk:
                    return "dropped"
                payload += chunk
            if h[0] & 0x0F == 8:
                return str(struct.unpack(">H", payload[:2])[0]) if len(payload) >= 2 else "close"
    except OSError:
        return "dropped"


def tone_frame(n):
    return b"".join(struct.pack("<h", ((n * 37 + i * 11) % 2000) - 1000) for i in range(160))


def binary_first():
    s = upgraded()
    s.sendall(frame(2, bytes(320)))
    return read_close(s)


def bad_json():
    s = upgraded()
    s.sendall(frame(1, b"{not json"))
    return read_close(s)


def too_deep():
    s = upgraded()
    s.sendall(frame(1, b'{"event":"websocket:connected","content-type":"audio/l16;rate=8000","x":' + b"[" * 64 + b"1" + b"]" * 64 + b"}"))
    return read_close(s)


def huge_metadata():
    return close_code_after(upgraded(), [frame(1, b'{"x":"' + b"a" * (1 << 20) + b'"}')])


def odd_frames():
    """Three seconds of odd-length and 1-byte frames, then a clean close: lenient re-framing."""
    s = call()
    for n in range(150):
        data = tone_frame(n)
        for piece in (data[:1], data[1:162], data[162:]):
            s.sendall(frame(2, piece))
        time.sleep(0.02)
    s.sendall(frame(8, struct.pack(">H", 1000)))
    return read_close(s)


def mebibyte_frame():
    return close_code_after(call(), [frame(2, bytes(1 << 20))])


def text_flood():
    return close_code_after(call(), [frame(1, b'{"event":"websocket:dtmf","digit":"1"}')] * 10_000)


def continuation_abuse():
    return close_code_after(call(), [frame(2, bytes(1024), fin=False)] + [frame(0, bytes(1024), fin=False)] * 100)


def slowloris():
    s = connect(timeout=20)
    start = time.time()
    try:
        for b in UPGRADE[:-4]:
            s.sendall(bytes([b]))
            s.settimeout(1.0)
            try:
                if s.recv(64) == b"":
                    return "dropped"
            except socket.timeout:
                pass
            if time.time() - start > 15:
                return "still open after 15 s"
    except OSError:
        return "dropped"
    return "sent it all"


def reset_mid_frame():
    s = call()
    for n in range(100):
        s.sendall(frame(2, tone_frame(n)))
        time.sleep(0.02)
    f = frame(2, tone_frame(100))
    s.sendall(f[: len(f) // 2])
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    return "reset"


def never_reads():
    """Sends audio for 20 s and never reads the echo, with a tiny receive window: the server's
    write timeout (10 s by default) closes it once its send buffer is full."""
    s = call(rcvbuf=4096)
    try:
        for n in range(1000):
            s.sendall(frame(2, tone_frame(n)))
            time.sleep(0.02)
    except OSError:
        return "dropped"
    return "sent it all"


def connect_and_drop():
    for _ in range(20):
        connect().close()
    return "dropped"


FAULTS = [
    binary_first, bad_json, too_deep, huge_metadata, odd_frames, mebibyte_frame, text_flood,
    continuation_abuse, slowloris, reset_mid_frame, never_reads, connect_and_drop,
]
results = {f.__name__: {} for f in FAULTS}
lock = threading.Lock()
counter = [0]


stop = threading.Event()
# SIGTERM (soak.sh sends it after KILL=1's kill -9): finish the faults under way, then report.
signal.signal(signal.SIGTERM, lambda *_: stop.set())


def worker():
    while time.time() < DEADLINE and not stop.is_set():
        with lock:
            fault = FAULTS[counter[0] % len(FAULTS)]
            counter[0] += 1
        try:
            outcome = fault()
        except Exception as e:  # a refused connection is an outcome too
            outcome = type(e).__name__
            if isinstance(e, ConnectionRefusedError):
                time.sleep(0.1)  # the server is gone (KILL=1): no busy loop
        with lock:
            results[fault.__name__][outcome] = results[fault.__name__].get(outcome, 0) + 1


threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with open(REPORT, "w") as f:
    json.dump(results, f, indent=1, sort_keys=True)
