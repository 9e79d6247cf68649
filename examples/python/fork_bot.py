"""A voice bot for callpipe's `fork`, in Python: the server end of a fork with
`replies = "commands"` (see docs/processors.md, "Fork / bridge").

callpipe connects to the bot once per call and streams the caller's audio to it as binary
messages of 16-bit little-endian mono PCM, 20 ms each, at the fork's `rate`. Whatever the bot
sends back as binary is played to the caller (at `reply_rate`); text messages with an `action`
steer the call. This bot answers every second of the caller's audio with a short beep, barges in
(`clear`) when the caller presses a key, and after three seconds asks to be told when its last
beep has played (`notify`), then hangs up.

    pip install websockets        # or: apt-get install python3-websockets
    python3 examples/python/fork_bot.py 9200

with a route such as

    [[route]]
    path = "/bot"
    processors = [{ type = "fork", url = "ws://127.0.0.1:9200/bot", rate = 16000, reply_rate = 16000, replies = "commands" }]
"""

import asyncio
import json
import math
import struct
import sys

import websockets

RATE = 16000
FRAME_BYTES = RATE // 50 * 2  # one 20 ms frame of 16-bit mono


def beep(ms=200, hz=880, level=8000):
    """`ms` of a sine at `hz`, as the bytes callpipe plays."""
    n = RATE * ms // 1000
    return struct.pack(f"<{n}h", *(int(level * math.sin(2 * math.pi * hz * i / RATE)) for i in range(n)))


async def bot(ws, path=None):  # `path`: older versions of websockets pass it
    frames = 0
    async for message in ws:
        if isinstance(message, bytes):
            frames += len(message) // FRAME_BYTES
            if frames % 50 == 0:  # a second of the caller's audio: answer it
                await ws.send(beep())
            if frames == 150:  # three seconds: hang up once the last beep has been heard
                await ws.send(json.dumps({"action": "notify", "payload": {"bye": True}}))
            continue
        event = json.loads(message)
        if event.get("event") == "dtmf":
            await ws.send(json.dumps({"action": "clear"}))  # barge-in
        elif event.get("event") == "notify" and event.get("payload", {}).get("bye"):
            await ws.send(json.dumps({"action": "hangup"}))


async def main(port):
    async with websockets.serve(bot, "127.0.0.1", port):
        print(f"bot listening on ws://127.0.0.1:{port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9200))
