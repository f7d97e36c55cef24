"""How the handler is served: uvicorn's httptools protocol with deadlines, so no connection is held forever.

Cloud Run's front end shields the deployed service from idle and slow clients; a local run (or any run
without that front end) has only this. uvicorn closes a keep-alive connection that stays idle after a
response, but not one that never sends a request, and any byte resets its idle timer, so a client
sending a request a byte at a time (slowloris) holds the connection, and a slot, forever. Here:

- a connection must start a request within the idle timeout of opening, as after each response;
- a request must arrive whole, headers and body, within the read timeout of its first byte.

An answer taking long is not cut off: that is the dispatch deadline's business (Cloud Tasks gives up
and retries), and the action may legitimately take minutes.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REQUEST_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                            b"content-length: 29\r\nconnection: close\r\n\r\nrequest not received in time")


class DeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol, plus a deadline for reading each request and for a new connection's first byte."""

    request_read_timeout: float
    """Seconds from a request's first byte until all of it must have arrived; set by `protocol_with_deadlines`."""

    _read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms its idle timer only after a response; a new connection waits for its first request too.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.request_read_timeout, self._read_timed_out)
        super().data_received(data)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_deadline()
        super().connection_lost(exc)

    def _cancel_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        if self.pipeline:
            # Requests queued behind a running one wait on us, not on the client: look again later.
            self._read_deadline = self.loop.call_later(self.request_read_timeout, self._read_timed_out)
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.more_body:
            # The request arrived whole and is being answered; bytes after it came too slowly, so this
            # connection ends with that answer.
            cycle.keep_alive = False
            return
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(REQUEST_TIMEOUT_RESPONSE)  # nothing else is being written on this connection
        self.transport.close()  # the application, if it waits for the body, sees a disconnect


def protocol_with_deadlines(request_read_timeout: float) -> type[DeadlineProtocol]:
    """The protocol class to give uvicorn (`http=`), reading each request within `request_read_timeout` s."""
    return type("DeadlineProtocol", (DeadlineProtocol,), {"request_read_timeout": request_read_timeout})
