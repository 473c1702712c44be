"""Pinned server certificates: trust on first use, as SSH's ``known_hosts`` does.

A server whose certificate no certificate authority vouches for (a self-signed
one, typically) can still be trusted: the user compares the fingerprint shown
on first use and accepts it; from then on the client accepts that certificate,
and only that one, from that ``host:port``. A different certificate later is
refused and reported (``CertificateChanged``); nothing here re-pins by itself.

The pins are kept in ``known_servers.json`` next to the settings file
(:func:`gui.settings.config_path`), readable by its owner only. The store is
shared by the network thread (which reads a pin at every connect, reconnects
included) and the Tk thread (which pins or forgets), hence the lock.

Also here: :func:`fingerprint` and :func:`summary`, which reads the subject,
issuer and expiry out of a DER certificate with a small ASN.1 walker, so the
client needs no third-party package to show them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import settings as settings_mod

__all__ = ["CertSummary", "KnownServers", "default_path", "fingerprint", "same_fingerprint", "server_key",
           "summary"]

FILE_NAME = "known_servers.json"


def default_path() -> Path:
    return settings_mod.config_path().parent / FILE_NAME


def fingerprint(der: bytes) -> str:
    """SHA-256 of the certificate, as browsers and ``openssl x509 -fingerprint`` show it: ``AB:CD:...``."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _normal(fp: str) -> str:
    return fp.replace(":", "").strip().lower()


def same_fingerprint(a: str, b: str) -> bool:
    """Whether two fingerprints are the same, whatever their colons and case."""
    return hmac.compare_digest(_normal(a), _normal(b))


def server_key(host: str, port: int) -> str:
    host = host.strip().lower().rstrip(".")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class KnownServers:
    """``host:port`` -> pinned SHA-256 fingerprint, kept in a JSON file.

    Methods for the caller: :meth:`get`, :meth:`pin`, :meth:`forget`. Every
    call reads the file afresh, so two windows (or an edit by hand) agree.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self._lock = threading.Lock()

    def get(self, host: str, port: int) -> str | None:
        with self._lock:
            entry = self._read().get(server_key(host, port))
        fp = entry.get("sha256") if isinstance(entry, dict) else None
        return fp if isinstance(fp, str) and len(_normal(fp)) == 64 else None

    def pin(self, host: str, port: int, fp: str, subject: str = "") -> None:
        with self._lock:
            data = self._read()
            data[server_key(host, port)] = {"sha256": fp, "subject": subject,
                                            "added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            self._write(data)

    def forget(self, host: str, port: int) -> bool:
        with self._lock:
            data = self._read()
            gone = data.pop(server_key(host, port), None) is not None
            if gone:
                self._write(data)
        return gone

    def _read(self) -> dict[str, object]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # An unreadable store must not turn into "nothing pinned" silently and let a
            # changed certificate through as a first use: refuse loudly instead.
            raise OSError(f"cannot read the pinned certificates in {self.path}: {exc}") from exc
        return raw if isinstance(raw, dict) else {}

    def _write(self, data: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.replace(tmp, self.path)


# -- a certificate in words --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CertSummary:
    subject: str = ""
    issuer: str = ""
    not_after: str = ""

    @property
    def self_signed(self) -> bool:
        return bool(self.subject) and self.subject == self.issuer


_NAMES = {b"\x55\x04\x03": "CN", b"\x55\x04\x0a": "O", b"\x55\x04\x0b": "OU"}


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``pos``."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        tag, s, e = _tlv(data, start)
        out.append((tag, s, e))
        start = e
    return out


def _name(data: bytes, start: int, end: int) -> str:
    parts = []
    for _, s, e in _children(data, start, end):  # SET OF
        for _, s2, e2 in _children(data, s, e):  # AttributeTypeAndValue
            (_, os_, oe), (_, vs, ve) = _children(data, s2, e2)[:2]
            label = _NAMES.get(data[os_:oe])
            if label:
                parts.append(f"{label}={data[vs:ve].decode('utf-8', 'replace')}")
    return ", ".join(parts)


def _time(data: bytes, tag: int, start: int, end: int) -> str:
    text = data[start:end].decode("ascii", "replace")
    if tag == 0x17:  # UTCTime, YYMMDDhhmmssZ
        text = ("19" if int(text[:2]) >= 50 else "20") + text
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}"


def summary(der: bytes) -> CertSummary:
    """Subject, issuer and expiry date of a DER certificate; empty fields if it cannot be read."""
    try:
        _, s, e = _tlv(der, 0)  # Certificate
        _, s, e = _children(der, s, e)[0]  # tbsCertificate
        fields = _children(der, s, e)
        if fields[0][0] == 0xA0:  # [0] version
            fields = fields[1:]
        issuer, validity, subject = fields[2], fields[3], fields[4]
        times = _children(der, validity[1], validity[2])
        return CertSummary(subject=_name(der, subject[1], subject[2]), issuer=_name(der, issuer[1], issuer[2]),
                           not_after=_time(der, *times[1]))
    except (IndexError, ValueError):
        return CertSummary()
