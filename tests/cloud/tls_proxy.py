"""A TLS-intercepting CONNECT proxy that sends Google Cloud Storage traffic to a local emulator.

TensorFlow's ``gs://`` filesystem talks to hard-coded endpoints
(``https://www.googleapis.com/storage/v1/`` and ``.../upload/storage/v1/``) and honours no
emulator variable, but its libcurl honours ``https_proxy`` and ``CURL_CA_BUNDLE``. This proxy
answers ``CONNECT host:443``, completes the TLS handshake itself with a certificate for the
Google hosts signed by a test CA (the one ``CURL_CA_BUNDLE`` names), and relays the decrypted
HTTP/1.1 bytes unchanged to the emulator's plain-HTTP port. The emulator routes by path
(``/storage/v1/...``, ``/upload/storage/v1/...``), so it needs no change.

Run as a subprocess (``python -m tests.cloud.tls_proxy --port P --backend 127.0.0.1:Q --cert C
--key K``) so that it never waits for a Python lock held by the client under test. It prints
``READY <port>`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ssl
import sys
from pathlib import Path

GOOGLE_HOSTS = ("www.googleapis.com", "storage.googleapis.com", "oauth2.googleapis.com")


def write_test_ca(directory: Path) -> tuple[Path, Path, Path]:
    """Writes a throw-away CA and a server certificate for the Google storage hosts.

    Returns:
        ``(ca_cert, server_cert, server_key)`` paths, all PEM.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "GCS emulator test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GOOGLE_HOSTS[0])]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in GOOGLE_HOSTS]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, log: str = "") -> None:
    """Relays bytes unchanged until either side closes."""
    try:
        while data := await reader.read(65536):
            if log:
                print(log, data[:200], flush=True)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        _close(writer)


def _close(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
    except (ConnectionError, ssl.SSLError, RuntimeError):
        pass


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[bytes, bytes]]) -> bytes:
    """Reads a request body framed by Content-Length or chunked transfer encoding."""
    fields = {name.lower(): value.strip().lower() for name, value in headers}
    if b"chunked" in fields.get(b"transfer-encoding", b""):
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return await reader.readexactly(int(fields.get(b"content-length", b"0")))


async def _relay_requests(reader: asyncio.StreamReader, client: asyncio.StreamWriter, *,
                          backend: tuple[str, int], first: bytes | None, verbose: bool) -> None:
    """Forwards the client's HTTP/1.1 requests to the emulator and its responses back.

    Each request goes out in origin form, with its body de-chunked and sent with a
    Content-Length, without ``Expect: 100-continue`` (the proxy answers it itself) and without
    ``Transfer-Encoding: identity`` (which TensorFlow sends and Go's HTTP server refuses).
    The emulator connection is opened only once a whole request has arrived, because
    gcp-storage-emulator serves one connection at a time. Responses are relayed unchanged;
    gcp-storage-emulator answers in HTTP/1.0 and closes, which closes the client side too.
    """
    backend_writer = None
    responses = None
    try:
        while True:
            head = first if first is not None else await reader.readuntil(b"\r\n\r\n")
            first = None
            request_line, *lines = head[:-4].split(b"\r\n")
            method, target, version = request_line.split(b" ", 2)
            if target.startswith(b"http://") or target.startswith(b"https://"):
                target = b"/" + (target.split(b"/", 3)[3] if target.count(b"/") >= 3 else b"")
            headers = [tuple(line.split(b":", 1)) for line in lines if b":" in line]
            if any(n.strip().lower() == b"expect" for n, _ in headers):
                client.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await client.drain()
            body = await _read_body(reader, headers)
            kept = [(n, v) for n, v in headers
                    if n.strip().lower() not in (b"expect", b"transfer-encoding", b"content-length")]
            kept.append((b"Content-Length", b" " + str(len(body)).encode()))
            out = b" ".join((method, target, version)) + b"\r\n"
            out += b"".join(n + b":" + v + b"\r\n" for n, v in kept) + b"\r\n" + body
            if verbose:
                print("C>", out[:300], flush=True)
            if backend_writer is None:
                backend_reader, backend_writer = await asyncio.open_connection(*backend)
                responses = asyncio.ensure_future(_pipe(backend_reader, client, log="S>" if verbose else ""))
            backend_writer.write(out)
            await backend_writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        if responses is not None:
            await responses
            _close(backend_writer)
        else:
            _close(client)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                  backend: tuple[str, int], context: ssl.SSLContext, verbose: bool) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    if verbose:
        print("PROXY", head.split(b"\r\n")[0], flush=True)
    method, target = head.split(b" ", 2)[:2]
    if method == b"CONNECT":
        host = target.split(b":")[0].decode("ascii", "replace")
    else:
        # A plain-HTTP request in proxy form ("PUT http://host/path HTTP/1.1"): an emulator
        # builds the resumable-upload Location from the Host header, with scheme http.
        host = target.split(b"/")[2].decode("ascii", "replace") if target.startswith(b"http://") else ""
    if host not in GOOGLE_HOSTS:
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        _close(writer)
        return
    first = None
    if method == b"CONNECT":
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await writer.start_tls(context)
    else:
        first = head
    await _relay_requests(reader, writer, backend=backend, first=first, verbose=verbose)


async def serve(*, port: int, backend: tuple[str, int], cert: Path, key: Path, verbose: bool = False) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def handle(reader, writer):
        try:
            await _handle(reader, writer, backend=backend, context=context, verbose=verbose)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    parser.add_argument("--backend", required=True, help="HOST:PORT of the emulator's plain-HTTP endpoint")
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--verbose", action="store_true", help="print the start of every relayed chunk")
    args = parser.parse_args(argv)
    host, _, port = args.backend.rpartition(":")
    asyncio.run(serve(port=args.port, backend=(host, int(port)), cert=args.cert, key=args.key,
                      verbose=args.verbose))
    return 0


if __name__ == "__main__":
    sys.exit(main())
