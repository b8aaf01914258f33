"""An independent permessage-deflate client for fanout's tests: the Python
websockets library and its zlib, nothing of fanout's. For each offer below
it checks what the server answered (the agreed parameters, or a decline),
echoes JSON-like text and binary messages (repeated, so that context
takeover is exercised), then puts members with different offers and one
without deflate in one room, publishes from each, and checks every member
gets every message exactly once. It prints one line per offer with the
server's answer, then `ok`, or fails with a traceback.

usage: deflate_client.py PORT MODE     (MODE: shared or per-connection)
"""

import asyncio
import json
import random
import sys

import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

# Each offer the tests make: its name and the factory's parameters.
OFFERS = {
    "default": dict(client_max_window_bits=True),
    "bare": dict(client_max_window_bits=None),
    "server-no-takeover": dict(server_no_context_takeover=True),
    "client-no-takeover": dict(client_no_context_takeover=True),
    "server-window-10": dict(server_max_window_bits=10),
    "client-window-9": dict(client_max_window_bits=9),
    "everything": dict(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=9,
        client_max_window_bits=12,
    ),
}


def json_like(i, n):
    """JSON-like text of about n bytes: what real traffic compresses like."""
    rng = random.Random(i)
    items = []
    while sum(len(x) for x in items) < n:
        items.append(json.dumps({"id": rng.randrange(10**6), "user": f"u{rng.randrange(50)}",
                                 "text": "price update", "value": round(rng.random(), 4)}))
    return ("[" + ",".join(items) + "]")[:n]


def expected_answer(mode, offer):
    """The parameters the server must answer with, in its order."""
    params = ["permessage-deflate"]
    if mode == "shared" or offer.get("server_no_context_takeover"):
        params.append("server_no_context_takeover")
    if mode == "shared" or offer.get("client_no_context_takeover"):
        params.append("client_no_context_takeover")
    if offer.get("server_max_window_bits"):
        params.append(f"server_max_window_bits={offer['server_max_window_bits']}")
    client_bits = offer.get("client_max_window_bits")
    if isinstance(client_bits, int) and not isinstance(client_bits, bool) and client_bits < 15:
        params.append(f"client_max_window_bits={client_bits}")
    return "; ".join(params)


def answer_of(ws):
    """The server's Sec-WebSocket-Extensions (websockets' new and legacy APIs)."""
    headers = ws.response.headers if hasattr(ws, "response") else ws.response_headers
    return headers.get("Sec-WebSocket-Extensions")


def connect(url, offer):
    extensions = [] if offer is None else [ClientPerMessageDeflateFactory(**offer)]
    return websockets.connect(url, compression=None, extensions=extensions,
                              max_size=None, open_timeout=10)


async def echo_checks(url, mode, name, offer):
    async with connect(url + "/echo", offer) as ws:
        answer = answer_of(ws)
        assert answer == expected_answer(mode, offer), f"{name}: answered {answer!r}"
        for round in range(3):  # the same messages again: takeover refers back
            for n in [1, 100, 5000, 70000]:
                text = json_like(n, n)
                await ws.send(text)
                assert await asyncio.wait_for(ws.recv(), 10) == text, f"{name}: text {n}"
            data = random.Random(round).randbytes(3000)
            await ws.send(data)
            assert await asyncio.wait_for(ws.recv(), 10) == data, f"{name}: binary"
    return f"{name}: {answer}"


async def declined_check(url):
    """An offer the server cannot honour (server window 8): declined, and
    the connection works uncompressed."""
    offer = dict(server_max_window_bits=8)
    async with connect(url + "/echo", offer) as ws:
        answer = answer_of(ws)
        assert answer is None, f"server window 8 was answered {answer!r}"
        await ws.send("plain")
        assert await asyncio.wait_for(ws.recv(), 10) == "plain"
    return "server-window-8: declined"


async def room_check(url):
    offers = [OFFERS["default"], OFFERS["everything"], OFFERS["client-window-9"], None]
    room = [await connect(url + "/room", offer) for offer in offers]
    await asyncio.sleep(0.3)  # every member joined before the first message
    sent = [json_like(i, 200 + 900 * i) for i in range(len(room))]
    for member, message in zip(room, sent):
        await member.send(message)
    for i, member in enumerate(room):
        got = [await asyncio.wait_for(member.recv(), 10) for _ in sent]
        assert sorted(got) == sorted(sent), f"member {i} got other messages"
    for member in room:
        await member.close()
    return f"room: {len(room)} members (one without deflate) got all {len(sent)} messages"


async def main(port, mode):
    url = f"ws://127.0.0.1:{port}"
    lines = [await echo_checks(url, mode, name, offer) for name, offer in OFFERS.items()]
    lines.append(await declined_check(url))
    lines.append(await room_check(url))
    print("\n".join(lines))
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
