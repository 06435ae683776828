"""A minimal HTTP/1.1 client for the benchmarks' load generators."""

import asyncio


class RawClient:
    """Keep-alive HTTP/1.1 connections driven with bare asyncio streams, requests encoded by hand: a
    fraction of httpx's CPU per request (httpx could not offer 200 requests/s open-loop beside the
    stack on 2 cores). A request waits for a free connection when all are busy."""

    def __init__(self, port: int, headers: dict[str, str], connections: int = 64):
        self.port = port
        self.head = (f"host: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
                     + "".join(f"{k}: {v}\r\n" for k, v in headers.items()))
        self.size = connections
        self.free: asyncio.Queue = asyncio.Queue()

    async def __aenter__(self) -> "RawClient":
        for _ in range(self.size):
            self.free.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))
        return self

    async def __aexit__(self, *exc) -> None:
        while not self.free.empty():
            self.free.get_nowait()[1].close()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        status, _, answer = await self.exchange(path, body)
        return status, answer

    async def exchange(self, path: str, body: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        """One POST: its status, its headers (lower-cased names) and its body."""
        reader, writer = await self.free.get()
        try:
            writer.write(f"POST {path} HTTP/1.1\r\n{self.head}content-length: {len(body)}\r\n\r\n".encode() + body)
            head = await reader.readuntil(b"\r\n\r\n")
            headers = {}
            for line in head[:-4].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            answer = await reader.readexactly(int(headers.get(b"content-length", 0)))
        except BaseException:
            writer.close()
            self.free.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))
            raise
        self.free.put_nowait((reader, writer))
        return int(head[9:12]), headers, answer
