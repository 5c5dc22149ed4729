"""The stream readers' HTTP client (worker/streams/client.py) against real sockets: a local
server on asyncio, plain and TLS (a self-signed certificate made by openssl), direct and
through a proxy."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from worker.streams import client as client_module
from worker.streams.client import Connection, HttpClient, StreamError

EVENT = b"event: thread.message.delta\ndata: {}\n\n"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """Answers each request on a connection by `answer`; counts connections, keeps request heads."""

    def __init__(self, answer: Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]) -> None:
        self.answer = answer
        self.connections = 0
        self.heads: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):  # the client went away
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    self.heads.append(head)
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    await reader.readexactly(length)
                    await self.answer(head, writer)
        finally:
            writer.close()


async def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1]


async def stop(listener: asyncio.Server, writers: list[asyncio.StreamWriter], client: HttpClient | None) -> None:
    """Every socket of the test closed before its loop ends."""
    if client is not None:
        await client.close()
    for writer in writers:
        writer.close()
    listener.close()
    await listener.wait_closed()
    await asyncio.sleep(0.05)  # the transports' closes run


def make_client(port: int, scheme: str = "http", **options: object) -> HttpClient:
    settings: dict[str, object] = {"proxy": None, "proxy_headers": None, "connect_timeout": 5.0,
                                   "read_timeout": 60.0, **options}
    tls = settings.pop("tls", None)
    return HttpClient(f"{scheme}://localhost:{port}/v1/", {"Authorization": "Bearer k"},
                      tls, **settings)  # type: ignore[arg-type]


async def stream_events(head: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        writer.write(b"%x\r\n%s\r\n" % (len(EVENT), EVENT))
        await writer.drain()
        await asyncio.sleep(0.01)
    writer.write(b"0\r\n\r\n")


async def collect(response: Connection) -> tuple[list[bytes], BaseException | None]:
    """The body's chunks as delivered, and how it ended."""
    chunks: list[bytes] = []
    ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    response.deliver(chunks.append, ended.set_result)
    return chunks, await asyncio.wait_for(ended, 10)


async def streamed(client: HttpClient, body: bytes = b"{}") -> tuple[Connection, list[bytes], BaseException | None]:
    """A streamed request sent, and its body as `collect` gives it."""
    response = await client.request("POST", "threads/runs", body)
    return (response, *await collect(response))


def test_a_streamed_body_comes_chunk_by_chunk_and_its_connection_serves_the_next_request() -> None:
    async def run() -> None:
        server = Server(stream_events)
        listener, port = await serve(server.handle)
        client = make_client(port)
        for _ in range(2):
            response, chunks, ended = await streamed(client, b'{"stream":true}')
            assert response.status == 200 and response.headers["content-type"] == "text/event-stream"
            assert ended is None and b"".join(chunks) == EVENT * 3 and len(chunks) >= 2  # as they came
            client.release(response)
        assert server.connections == 1  # kept and reused
        head = server.heads[0].decode()
        assert head.startswith("POST /v1/threads/runs HTTP/1.1\r\n")
        assert "Authorization: Bearer k\r\n" in head and "Content-Length: 15\r\n" in head
        assert head.count("Content-Type:") == 1 and "Accept-Encoding: identity" in head
        await stop(listener, server.writers, client)

    asyncio.run(run())


def test_an_error_answer_is_read_whole_with_its_headers() -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        body = b'{"error": {"message": "slow down"}}'
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 2\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    async def run() -> None:
        server = Server(answer)
        listener, port = await serve(server.handle)
        client = make_client(port)
        response = await client.request("GET", "responses/r1?stream=true", None)
        assert (response.status, response.headers["retry-after"]) == (429, "2")
        assert await response.read() == b'{"error": {"message": "slow down"}}'
        client.release(response)
        assert response.status == 429  # still, once kept for the next request
        await stop(listener, server.writers, client)

    asyncio.run(run())


def test_a_body_cut_mid_way_fails_and_one_that_lasts_until_the_close_ends_cleanly() -> None:
    async def cut(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"%x\r\n%s\r\n" % (len(EVENT), EVENT))
        await writer.drain()
        writer.close()

    async def until_close(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n" + EVENT)
        await writer.drain()
        writer.close()

    async def run() -> None:
        for answer, failed in ((cut, True), (until_close, False)):
            server = Server(answer)
            listener, port = await serve(server.handle)
            client = make_client(port)
            response, chunks, ended = await streamed(client)
            assert b"".join(chunks) == EVENT
            assert isinstance(ended, StreamError) if failed else ended is None
            client.release(response)
            await stop(listener, server.writers, client)

    asyncio.run(run())


def test_a_silent_body_times_out_and_a_refused_connection_fails() -> None:
    async def silent(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        await asyncio.sleep(30)

    async def run() -> None:
        server = Server(silent)
        listener, port = await serve(server.handle)
        client = make_client(port, read_timeout=0.2)
        response, _, ended = await streamed(client)
        assert isinstance(ended, TimeoutError)
        client.release(response)
        await stop(listener, server.writers, client)
        refused = make_client(port)
        with pytest.raises(OSError):
            await refused.request("POST", "threads/runs", b"{}")  # nobody listens now
        await refused.close()

    asyncio.run(run())


def test_an_http_proxy_gets_the_whole_url() -> None:
    async def run() -> None:
        server = Server(stream_events)
        listener, port = await serve(server.handle)
        client = make_client(4, proxy=f"http://127.0.0.1:{port}", proxy_headers={"Proxy-Authorization": "Basic x"})
        _, _, ended = await streamed(client)
        assert ended is None
        head = server.heads[0].decode()
        assert head.startswith("POST http://localhost:4/v1/threads/runs HTTP/1.1\r\n")
        assert "Proxy-Authorization: Basic x\r\n" in head
        await stop(listener, server.writers, client)

    asyncio.run(run())


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_tls_direct_and_through_a_connect_tunnel(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    tunnels: list[bytes] = []
    proxy_writers: list[asyncio.StreamWriter] = []

    async def run() -> None:
        server = Server(stream_events)
        listener, port = await serve(server.handle, server_tls)

        async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            tunnels.append(await reader.readuntil(b"\r\n\r\n"))
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
            proxy_writers.extend((writer, upstream_writer))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

            async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
                while data := await source.read(65536):
                    sink.write(data)
                sink.close()

            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer),
                                 return_exceptions=True)

        proxy_listener, proxy_port = await serve(proxy)
        for options in ({}, {"proxy": f"http://127.0.0.1:{proxy_port}", "proxy_headers": {"Proxy-Authorization": "B"}}):
            client = make_client(port, "https", tls=client_tls, **options)
            response, chunks, ended = await streamed(client)
            assert ended is None and b"".join(chunks) == EVENT * 3
            client.release(response)
            await client.close()
        await stop(proxy_listener, proxy_writers, None)
        await stop(listener, server.writers, None)
        assert tunnels and tunnels[0].startswith(f"CONNECT localhost:{port} HTTP/1.1\r\n".encode())
        assert b"Proxy-Authorization: B\r\n" in tunnels[0]

    asyncio.run(run())


@pytest.mark.parametrize("why", ["the server closed it", "it is too old"])
def test_a_kept_connection_is_not_reused_when(why: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def once(head: bytes, writer: asyncio.StreamWriter) -> None:
        await stream_events(head, writer)
        await writer.drain()
        if why == "the server closed it":
            writer.close()  # a keep-alive the server does not keep

    if why == "it is too old":
        monkeypatch.setattr(client_module, "IDLE_SECONDS", 0.0)

    async def run() -> None:
        server = Server(once)
        listener, port = await serve(server.handle)
        client = make_client(port)
        for _ in range(2):
            response, _, ended = await streamed(client)
            assert ended is None
            await asyncio.sleep(0.05)  # the close reaches the client
            client.release(response)
        assert server.connections == 2
        await stop(listener, server.writers, client)

    asyncio.run(run())


def test_an_informational_answer_is_not_the_response() -> None:
    async def early_hints(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)
        body = b'{"id": "run_1"}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))

    async def run() -> None:
        server = Server(early_hints)
        listener, port = await serve(server.handle)
        client = make_client(port)
        response = await client.request("POST", "threads/runs", b"{}")
        assert response.status == 200 and "link" not in response.headers
        assert await response.read() == b'{"id": "run_1"}'
        await stop(listener, server.writers, client)

    asyncio.run(run())


def test_a_kept_connection_that_receives_bytes_is_closed_not_reused() -> None:
    async def then_more(head: bytes, writer: asyncio.StreamWriter) -> None:
        await stream_events(head, writer)
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")  # unasked

    async def run() -> None:
        server = Server(then_more)
        listener, port = await serve(server.handle)
        client = make_client(port)
        response, _, ended = await streamed(client)
        assert ended is None
        client.release(response)  # kept
        await asyncio.sleep(0.1)  # the unasked answer arrives
        response, _, ended = await streamed(client)
        assert ended is None and server.connections == 2
        await stop(listener, server.writers, client)

    asyncio.run(run())
