#!/usr/bin/env python3
"""A PNG of a page open in a Chromium started with --remote-debugging-port,
over the DevTools protocol; prints how many points each chart drew.

usage: page-screenshot.py DEVTOOLS_PORT PAGE_HOST:PORT OUT.png
"""
import asyncio
import base64
import json
import sys
import urllib.request

import websockets


async def main(devtools, page_addr, out):
    targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{devtools}/json/list"))
    page = next(t for t in targets if t["type"] == "page" and page_addr in t["url"])
    async with websockets.connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
        calls = 0

        async def call(method, params):
            nonlocal calls
            calls += 1
            await ws.send(json.dumps({"id": calls, "method": method, "params": params}))
            while True:
                message = json.loads(await ws.recv())
                if message.get("id") == calls:
                    return message["result"]

        async def evaluate(expression):
            result = await call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
            return result["result"]["value"]

        height = await evaluate("document.documentElement.scrollHeight")
        clip = {"x": 0, "y": 0, "width": 1100, "height": height, "scale": 1}
        shot = await call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
        with open(out, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print(await evaluate(
            "JSON.stringify([...document.querySelectorAll('figure.chart')].map(f => [f.id, +f.dataset.points]))"))


asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
