"""An independent wss:// client for fanout's tests: Python's ssl and the
websockets library, nothing of fanout's. It verifies the server against a
CA file, echoes messages of 1 B to 70 KB, then joins the room with several
members, publishes from each and checks every member gets every message
exactly once. It prints a transcript of what it received (one line per
message: route, length, SHA-256) and `ok`, or fails with a traceback.

usage: wss_client.py PORT CAFILE [MEMBERS]
"""

import asyncio
import hashlib
import ssl
import sys

import websockets

SIZES = [1, 125, 126, 1000, 16383, 16384, 16385, 65535, 65536, 70000]


def digest(data):
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()[:16]


async def main(port, cafile, members):
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    url = f"wss://localhost:{port}"
    options = dict(ssl=context, compression=None, max_size=None, open_timeout=10)
    transcript = []
    async with websockets.connect(url + "/echo", **options) as ws:
        for n in SIZES:
            message = bytes(i % 251 for i in range(n))
            await ws.send(message)
            reply = await asyncio.wait_for(ws.recv(), 10)
            assert reply == message, f"echo of {n} bytes came back as {len(reply)}"
            transcript.append(f"echo {n} {digest(reply)}")
        await ws.send("text ✓")
        reply = await asyncio.wait_for(ws.recv(), 10)
        assert reply == "text ✓", reply
        transcript.append(f"echo text {digest(reply)}")
    room = [await websockets.connect(url + "/room", **options) for _ in range(members)]
    await asyncio.sleep(0.3)  # every member joined before the first message
    sent = [f"from member {i}" for i in range(members)]
    for member, message in zip(room, sent):
        await member.send(message)
    for i, member in enumerate(room):
        got = [await asyncio.wait_for(member.recv(), 10) for _ in sent]
        assert sorted(got) == sorted(sent), f"member {i} got {got}"
        transcript.append(f"room member {i} got {len(got)} {digest(''.join(sorted(got)))}")
    for member in room:
        await member.close()
    print("\n".join(transcript))
    print("ok")


if __name__ == "__main__":
    members = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], members))
