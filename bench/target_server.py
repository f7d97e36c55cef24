"""A trivial HTTP target for the emulator benchmarks, run as its own process.

POST /fast answers 200 at once; POST /slow after 50 ms. It records each request's arrival time and
the most requests in flight at once, and how many connections the requests came over; GET /stats
returns them, POST /reset clears them.
"""

from __future__ import annotations

import asyncio
import sys
import time

from aiohttp import web

arrivals: list[float] = []
state = {"in_flight": 0, "peak": 0}
connections: set[tuple[str, int]] = set()


def arrived(request: web.Request) -> None:
    arrivals.append(time.time())
    if request.transport is not None:
        connections.add(request.transport.get_extra_info("peername"))


async def fast(request: web.Request) -> web.Response:
    await request.read()
    arrived(request)
    return web.Response(status=200)


async def slow(request: web.Request) -> web.Response:
    await request.read()
    arrived(request)
    state["in_flight"] += 1
    state["peak"] = max(state["peak"], state["in_flight"])
    try:
        await asyncio.sleep(0.05)
    finally:
        state["in_flight"] -= 1
    return web.Response(status=200)


async def stats(request: web.Request) -> web.Response:
    return web.json_response({"count": len(arrivals), "arrivals": arrivals, "peak_in_flight": state["peak"],
                              "connections": len(connections)})


async def reset(request: web.Request) -> web.Response:
    arrivals.clear()
    connections.clear()
    state["peak"] = 0
    return web.json_response({"count": 0})


def main() -> None:
    app = web.Application()
    app.add_routes([web.post("/fast", fast), web.post("/slow", slow), web.get("/stats", stats),
                    web.post("/reset", reset)])
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
