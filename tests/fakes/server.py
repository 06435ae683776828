"""A fake's ASGI app served by uvicorn on a free local port, in a daemon thread of the test process."""

import threading
import time

import uvicorn

from shared.infra import free_port


class ThreadedServer:
    def __init__(self, app, port: int | None = None):
        self.port = port or free_port()
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     access_log=False))
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 20) -> "ThreadedServer":
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise TimeoutError(f"the server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread:
            self._thread.join(10)
