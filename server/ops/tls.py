"""TLS for client connections: the server context, and one connection's TLS state.

A TLS session runs OpenSSL over memory BIOs (:class:`ssl.SSLObject`), not an
``SSLSocket``: the client thread reads ciphertext from the socket and feeds it in;
every writer (the subscriber, the client thread, the timer) encrypts into bytes
that then take the plain output path (:mod:`server.process.sendq`: ``MSG_DONTWAIT``
sends, the SendQ, the writer thread). An OpenSSL ``SSL`` object must not be
used by two threads at once, not even ``SSL_read`` against ``SSL_write``
(openssl/openssl#20446), so every call on a :class:`TLSState` happens under
the owning ``Output``'s lock. With memory BIOs no such call ever waits on the
network, which is what makes holding that lock cheap.

The context is built by each worker at boot and again on SIGHUP (new
connections get the new certificate; established ones keep theirs).
"""

from __future__ import annotations

import ssl

from server.ops.config import Config

# A fatal unexpected_message alert (RFC 8446 5.: the answer to a record type
# that is not TLS), for when OpenSSL gives up without writing one of its own:
# it sends none when the first bytes are not a TLS record at all (plaintext
# IRC or HTTP on the TLS port), and a client then sees only a silent close.
UNEXPECTED_MESSAGE_ALERT = b"\x15\x03\x03\x00\x02\x02\x0a"


class TLSConfigError(Exception):
    """The certificate or key cannot be used."""


def make_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context: TLS 1.2 or later, no renegotiation, no compression."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    try:
        ctx.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load TLS certificate {cert!r} / key {key!r}: {exc}") from None
    return ctx


def context_from(config: Config) -> ssl.SSLContext | None:
    """The configured context, or None when TLS is off (no ``tls_cert``)."""
    if not config.tls_cert:
        return None
    return make_context(config.tls_cert, config.tls_key)


class TLSState:
    """One connection's TLS engine (server side). Not thread-safe: the caller
    holds the connection's output lock around every method."""

    __slots__ = ("done", "incoming", "obj", "outgoing")

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.done = False

    def handshake(self, data: bytes) -> tuple[bool, bytes]:
        """Feed ciphertext; return (handshake complete, bytes to send).
        Raises :class:`ssl.SSLError` on a failed handshake."""
        if data:
            self.incoming.write(data)
        try:
            self.obj.do_handshake()
            self.done = True
        except ssl.SSLWantReadError:
            pass
        return self.done, self.outgoing.read()

    def failure_alert(self) -> bytes:
        """After a failed handshake: what tells the client why (OpenSSL's own
        alert, else an unexpected_message alert)."""
        return self.outgoing.read() or UNEXPECTED_MESSAGE_ALERT

    def decrypt(self, data: bytes | None) -> tuple[bytes, bytes, bool]:
        """Feed ciphertext (``b""``: EOF; None: nothing new, just read what is
        already buffered); return (plaintext, bytes to send, peer closed).
        Raises :class:`ssl.SSLError` on a corrupt stream."""
        if data:
            self.incoming.write(data)
        elif data is not None:
            self.incoming.write_eof()
        chunks: list[bytes] = []
        closed = False
        while True:
            try:
                chunk = self.obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                closed = True
                break
            if not chunk:
                closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks), self.outgoing.read(), closed

    def encrypt(self, data: bytes) -> bytes:
        """Plaintext in, records out (memory BIOs: never waits)."""
        if not data:
            return b""
        self.obj.write(data)
        return self.outgoing.read()

    def version(self) -> str:
        return self.obj.version() or ""

    def cipher(self) -> str:
        c = self.obj.cipher()
        return c[0] if c else ""
