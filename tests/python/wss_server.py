"""An independent wss:// echo server for fanout's tests: Python's ssl and
the websockets library. It prints `ready PORT`, echoes every message on any
path, and exits when its standard input closes.

usage: wss_server.py CERT KEY
"""

import asyncio
import ssl
import sys

import websockets


async def echo(ws):
    # fanout load ends its connections with a reset: not an error here.
    try:
        async for message in ws:
            await ws.send(message)
    except (websockets.ConnectionClosed, ConnectionError):
        pass


async def main(cert, key):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert, key)
    async with websockets.serve(echo, "127.0.0.1", 0, ssl=context, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"ready {port}", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
