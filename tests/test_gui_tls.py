"""The GUI over TLS: certificate authorities, trust on first use, pins, a changed certificate.

The network client runs against the real server's TLS listener with
certificates made here; no display is needed except for the last test (its own
Xvfb, skipped without one). The controller's decisions are tested with a fake
view whose dialogs answer from a script.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gui import known_servers
from gui.client import CertificateChanged, Connected, Disconnected, Received, UntrustedCertificate
from gui.known_servers import KnownServers
from gui.settings import Settings
from server.protocol import Message
from tests.conftest import Server
from tests.test_gui_client import Driver

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

Start = Callable[..., Server]


# -- certificates ----------------------------------------------------------------------------
def _write(directory: Path, name: str, cert: Any, key: Any) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _builder(subject: str, issuer: str, public_key: Any) -> Any:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2)))


def _server_extensions(builder: Any) -> Any:
    return (builder
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))


def self_signed(directory: Path, cn: str = "localhost") -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _server_extensions(_builder(cn, cn, key.public_key())).sign(key, hashes.SHA256())
    return _write(directory, "server", cert, key)


def ca_signed(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate it signed: (ca.pem, server.pem, server.key)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (_builder("Chat-room Test CA", "Chat-room Test CA", ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (_server_extensions(_builder("localhost", "Chat-room Test CA", key.public_key()))
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, _ = _write(directory, "ca", ca, ca_key)
    cert_path, key_path = _write(directory, "server", leaf, key)
    return ca_path, cert_path, key_path


def fingerprint_of(pem: Path) -> str:
    """Computed here independently of the client: SHA-256 of the DER, as AB:CD:..."""
    import hashlib

    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.read_text())).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, 64, 2))


# -- servers and clients ---------------------------------------------------------------------
def tls_server(start: Start, cert: Path, key: Path, tls_port: int = 0) -> tuple[Server, int]:
    srv = start("--set", f"tls_cert={cert}", "--set", f"tls_key={key}", "--set", f"tls_port={tls_port}",
                "--set", "flood_exempt=127.0.0.0/8")
    return srv, int(srv.wait_log(r".*TLS on 127\.0\.0\.1:(\d+) .*").group(1))




@pytest.fixture
def drivers() -> Iterator[list[Driver]]:
    made: list[Driver] = []
    yield made
    for d in made:
        d.conn.stop()


@pytest.fixture
def known(tmp_path: Path) -> KnownServers:
    return KnownServers(tmp_path / "config" / "known_servers.json")


def ended(d: Driver) -> bool:
    """The client's thread has stopped (no reconnect is pending)."""
    assert d.conn.thread is not None
    d.conn.thread.join(5)
    return not d.conn.thread.is_alive()


# -- the network client --------------------------------------------------------------------------
def test_first_use_reports_the_fingerprint_then_the_pin_lets_chat_through(
        start_server: Start, drivers: list[Driver], known: KnownServers, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "a")
    srv, port = tls_server(start_server, cert, key)
    expected = fingerprint_of(cert)

    first = Driver(port, "alice", tls=True, known=known, backoff=(0.05, 0.1))
    drivers.append(first)
    first.pump_until(lambda: first.got(UntrustedCertificate))
    ev = first.got(UntrustedCertificate)[0]
    assert (ev.host, ev.port, ev.fingerprint) == ("127.0.0.1", port, expected)
    assert "self-signed" in ev.reason and ev.subject == ev.issuer == "CN=localhost" and ev.not_after
    assert ended(first), "an untrusted certificate is not retried"
    assert not first.got(Connected) and not first.got(Received), "no IRC over an unverified connection"
    assert known.get("127.0.0.1", port) is None, "the client never pins by itself"

    known.pin("127.0.0.1", port, ev.fingerprint, ev.subject)
    alice = Driver(port, "alice", tls=True, known=known)
    drivers.append(alice)
    alice.pump_until(lambda: alice.model.registered)
    connected = alice.got(Connected)[0]
    assert connected.tls and connected.fingerprint == expected
    alice.conn.send(Message("JOIN", ("#tls",)))
    alice.pump_until(lambda: alice.joined("#tls"))
    bob = srv.client("bob")  # plain TCP on the other listener
    bob.join("#tls")
    bob.send("PRIVMSG #tls :hello over plain TCP \u2603")
    alice.pump_until(lambda: "hello over plain TCP \u2603" in alice.lines("#tls"))
    alice.conn.send(Message("PRIVMSG", ("#tls", "hello back over TLS \U0001F512")))
    assert bob.expect("PRIVMSG").params == ("#tls", "hello back over TLS \U0001F512")


def test_a_changed_certificate_is_refused_on_reconnect_and_on_connect(
        start_server: Start, drivers: list[Driver], known: KnownServers, tmp_path: Path) -> None:
    cert_a, key_a = self_signed(tmp_path / "a")
    srv, port = tls_server(start_server, cert_a, key_a)
    known.pin("127.0.0.1", port, fingerprint_of(cert_a))
    alice = Driver(port, "alice", tls=True, known=known, backoff=(0.1, 0.3))
    drivers.append(alice)
    alice.pump_until(lambda: alice.model.registered)

    srv.stop()
    alice.pump_until(lambda: alice.got(Disconnected))
    assert alice.got(Disconnected)[0].retry_in is not None
    cert_b, key_b = self_signed(tmp_path / "b")  # same name, another key: what an impostor would show
    srv2, port2 = tls_server(start_server, cert_b, key_b, tls_port=port)
    assert port2 == port

    # The automatic reconnect checks the pin too, and stops for good.
    alice.pump_until(lambda: alice.got(CertificateChanged), timeout=15)
    changed = alice.got(CertificateChanged)[0]
    assert (changed.host, changed.port) == ("127.0.0.1", port)
    assert changed.old == fingerprint_of(cert_a) and changed.new == fingerprint_of(cert_b)
    assert ended(alice)
    assert len(alice.got(Connected)) == 1, "no connection after the change"
    assert known.get("127.0.0.1", port) == fingerprint_of(cert_a), "never re-pinned silently"

    fresh = Driver(port, "alice", tls=True, known=known)
    drivers.append(fresh)
    fresh.pump_until(lambda: fresh.got(CertificateChanged))
    assert ended(fresh) and not fresh.got(Connected)
    watcher = srv2.client("watcher")
    watcher.send("WHOIS alice")
    assert watcher.expect("401|311").verb == "401", "alice never signed in to the impostor"


def test_a_certificate_from_a_configured_ca_needs_no_prompt(
        start_server: Start, drivers: list[Driver], known: KnownServers, tmp_path: Path) -> None:
    ca, cert, key = ca_signed(tmp_path / "ca")
    _srv, port = tls_server(start_server, cert, key)
    alice = Driver(port, "alice", tls=True, cafile=str(ca), known=known)
    drivers.append(alice)
    alice.pump_until(lambda: alice.model.registered)
    assert not alice.got(UntrustedCertificate) and alice.got(Connected)[0].fingerprint == fingerprint_of(cert)
    assert known.get("127.0.0.1", port) is None and not known.path.exists()

    # Without that CA the same server is a first use, and the reason says why.
    bob = Driver(port, "bob", tls=True, known=known)
    drivers.append(bob)
    bob.pump_until(lambda: bob.got(UntrustedCertificate))
    ev = bob.got(UntrustedCertificate)[0]
    assert "issuer" in ev.reason and ev.issuer == "CN=Chat-room Test CA" and ev.subject == "CN=localhost"


def test_known_servers_file_and_certificate_summary(tmp_path: Path) -> None:
    store = KnownServers(tmp_path / "k" / "known_servers.json")
    fp = "AB:" * 31 + "AB"
    store.pin("Chat.Example.org.", 6697, fp, "CN=chat")
    assert store.get("chat.example.org", 6697) == fp and store.get("chat.example.org", 6667) is None
    assert KnownServers(store.path).get("CHAT.example.org", 6697) == fp  # from the file
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
    store.pin("::1", 6697, fp)
    assert "[::1]:6697" in store.path.read_text()
    assert known_servers.same_fingerprint(fp, fp.replace(":", "").lower())
    assert store.forget("chat.example.org", 6697) and not store.forget("chat.example.org", 6697)
    store.path.write_text("{not json")
    with pytest.raises(OSError, match="cannot read the pinned certificates"):
        store.get("::1", 6697)  # a broken store is never taken for "nothing pinned"

    _ca, cert, _ = ca_signed(tmp_path / "ca")
    info = known_servers.summary(ssl.PEM_cert_to_DER_cert(cert.read_text()))
    assert info.subject == "CN=localhost" and info.issuer == "CN=Chat-room Test CA" and not info.self_signed
    assert info.not_after == (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)).strftime("%Y-%m-%d")
    assert known_servers.summary(b"\x30\x03garbage") == known_servers.CertSummary()


# -- the controller's decisions, with a view that answers from a script ---------------------------
class FakeRoot:
    def protocol(self, *args: object) -> None:
        pass


class ScriptedView:
    """Stands in for MainView: drawing does nothing; dialogs pop answers and record what they showed."""

    def __init__(self) -> None:
        self.later: list[Callable[[], object]] = []
        self.answers: dict[str, list[bool]] = {"ask_trust_certificate": [], "warn_certificate_changed": [],
                                               "confirm_forget_certificate": []}
        self.asked: list[tuple[str, tuple[object, ...]]] = []
        self.status = ""

    def after(self, ms: int, func: Callable[[], object]) -> str:
        self.later.append(func)
        return "after#"

    def set_status(self, text: str, action: str | None = None) -> None:
        self.status = text

    def _dialog(self, name: str, *args: object) -> bool:
        self.asked.append((name, args))
        assert self.answers[name], f"unexpected dialog {name}{args}"
        return self.answers[name].pop(0)

    def ask_trust_certificate(self, *args: object) -> bool:
        return self._dialog("ask_trust_certificate", *args)

    def warn_certificate_changed(self, *args: object) -> bool:
        return self._dialog("warn_certificate_changed", *args)

    def confirm_forget_certificate(self, *args: object) -> bool:
        return self._dialog("confirm_forget_certificate", *args)

    def show_error(self, title: str, text: str) -> None:
        raise AssertionError(f"error dialog: {title}: {text}")

    def get_input(self) -> str:
        return ""

    def __getattr__(self, name: str) -> Callable[..., None]:  # set_sidebar, show, append, bell, ...
        return lambda *args, **kw: None


@pytest.fixture
def headless(known: KnownServers) -> Iterator[Callable[[Settings], Any]]:
    from gui.app import ChatApp

    class HeadlessApp(ChatApp):
        def init_ui(self) -> None:
            self.view = ScriptedView()  # type: ignore[assignment]

    apps: list[HeadlessApp] = []

    def make(settings: Settings) -> HeadlessApp:
        app = HeadlessApp(root=FakeRoot(), settings=settings, connect=False, save_settings=False, known=known,
                          notifier=lambda title, body: None)
        apps.append(app)
        return app

    yield make
    for app in apps:
        errors = list(app.errors)
        app.on_closing()
        assert errors == [], f"exceptions in the controller: {errors!r}"


def run_until(app: Any, cond: Callable[[], object], timeout: float = 15.0, what: str = "") -> None:
    """Run the fake event loop (the ``after`` callbacks) until ``cond()`` holds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; status: {app.status_text!r}; "
                                 f"dialogs: {app.view.asked!r}")
        due, app.view.later = app.view.later, []
        for func in due:
            func()
        time.sleep(0.02)


def settled(app: Any) -> bool:
    """Not connected and nothing left to do: the client's thread ended and every event was handled."""
    thread = app.client.thread
    return thread is not None and not thread.is_alive() and app.events.empty() and not any(
        getattr(f, "__name__", "") == "<lambda>" for f in app.view.later)


def test_controller_asks_pins_warns_and_forgets_only_after_two_confirmations(
        start_server: Start, headless: Callable[[Settings], Any], known: KnownServers, tmp_path: Path) -> None:
    cert_a, key_a = self_signed(tmp_path / "a")
    srv, port = tls_server(start_server, cert_a, key_a)
    fp_a = fingerprint_of(cert_a)
    app = headless(Settings(host="127.0.0.1", port=port, nick="alice", tls=True, channels=["#tofu"]))
    view: ScriptedView = app.view

    # First use, cancelled: nothing pinned, nothing connected, no retry.
    view.answers["ask_trust_certificate"] = [False]
    app.setup_connection()
    run_until(app, lambda: view.asked and settled(app), what="the first-use prompt")
    assert view.asked == [("ask_trust_certificate", ("127.0.0.1", port, fp_a, "CN=localhost", "CN=localhost",
                                                     view.asked[0][1][5], view.asked[0][1][6]))]
    assert "self-signed" in str(view.asked[0][1][6])
    assert known.get("127.0.0.1", port) is None and not app.model.registered
    assert "did not trust" in app.status_text

    # Asked again, trusted: pinned, connected again by itself, channels joined.
    view.answers["ask_trust_certificate"] = [True]
    app.setup_connection()
    run_until(app, lambda: app.model.registered and app.model.conversations.get("#tofu") is not None
              and app.model.conversations["#tofu"].joined, what="signed in after trusting")
    assert known.get("127.0.0.1", port) == fp_a and len(view.asked) == 2
    bob = srv.client("bob")
    bob.join("#tofu")
    bob.send("PRIVMSG #tofu :trusted now")
    run_until(app, lambda: any(ln.text == "trusted now" for ln in app.model.conversations["#tofu"].lines),
              what="bob's message")

    # The server comes back with another certificate: the reconnect stops at a warning.
    srv.stop()
    cert_b, key_b = self_signed(tmp_path / "b")
    fp_b = fingerprint_of(cert_b)
    srv2, _ = tls_server(start_server, cert_b, key_b, tls_port=port)
    view.answers["warn_certificate_changed"] = [False]  # "Stay disconnected"
    run_until(app, lambda: len(view.asked) == 3 and settled(app), what="the change warning")
    assert view.asked[2] == ("warn_certificate_changed", ("127.0.0.1", port, fp_a, fp_b, "CN=localhost",
                                                          "CN=localhost"))
    assert known.get("127.0.0.1", port) == fp_a and "changed" in app.status_text

    # "Forget", then "No" at the second confirmation: still pinned, still disconnected.
    view.answers["warn_certificate_changed"] = [True]
    view.answers["confirm_forget_certificate"] = [False]
    app.setup_connection()
    run_until(app, lambda: len(view.asked) == 5 and settled(app), what="the second confirmation")
    assert [name for name, _ in view.asked[3:]] == ["warn_certificate_changed", "confirm_forget_certificate"]
    assert known.get("127.0.0.1", port) == fp_a

    # "Forget" twice: the pin goes, the new certificate is shown as a first use, trusted, connected.
    view.answers["warn_certificate_changed"] = [True]
    view.answers["confirm_forget_certificate"] = [True]
    view.answers["ask_trust_certificate"] = [True]
    app.setup_connection()
    run_until(app, lambda: app.model.registered, what="signed in after forgetting and trusting")
    assert [name for name, _ in view.asked[5:]] == ["warn_certificate_changed", "confirm_forget_certificate",
                                                    "ask_trust_certificate"]
    assert view.asked[-1][1][2] == fp_b and known.get("127.0.0.1", port) == fp_b
    run_until(app, lambda: app.model.conversations.get("#tofu") is not None and app.model.conversations["#tofu"].joined,
              what="#tofu joined again")
    assert srv2.client("carol").join("#tofu")


# -- the real dialog, under Xvfb --------------------------------------------------------------------
def test_first_use_prompt_shows_the_fingerprint_and_trusting_connects(
        start_server: Start, display: str, known: KnownServers, tmp_path: Path) -> None:
    from gui.app import ChatApp
    from gui.view import TrustCertificateDialog
    from tests.test_gui_e2e import ARTIFACTS, screenshot, wait_until

    cert, key = self_signed(tmp_path / "a")
    _srv, port = tls_server(start_server, cert, key)
    app = ChatApp(settings=Settings(host="127.0.0.1", port=port, nick="alice", tls=True, channels=["#lobby"]),
                  ask=False, save_settings=False, known=known, notifier=lambda title, body: None)
    seen: dict[str, str] = {}

    def answer() -> None:
        dialogs = [w for w in app.root.winfo_children() if isinstance(w, TrustCertificateDialog)]
        if not dialogs or not dialogs[0].winfo_viewable():
            app.root.after(50, answer)
            return
        dialog = dialogs[0]
        dialog.update()
        seen["title"] = dialog.title()
        seen["fingerprint"] = dialog.fingerprint_text.get("1.0", "end").replace("\n", ":").strip(":")
        seen["focus"], seen["cancel"] = str(dialog.initial_focus), str(dialog.cancel_button)  # no WM: no X focus
        seen["texts"] = " ".join(str(w.cget("text")) for w in _descendants(dialog) if "Label" in w.winfo_class())
        screenshot(type("Shot", (), {"root": dialog})(), ARTIFACTS / "gui-tls-first-use.png")
        dialog.trust_button.invoke()

    try:
        app.root.after(50, answer)
        wait_until(app, lambda: app.model.registered, timeout=20, what="signed in after trusting")
        assert seen["fingerprint"] == fingerprint_of(cert)
        assert "can't be verified by a certificate authority" in seen["texts"]
        assert "Trust this server from now on?" in seen["texts"]
        assert seen["focus"] == seen["cancel"], "Cancel, not Trust, has the focus"
        assert known.get("127.0.0.1", port) == fingerprint_of(cert)
        assert app.errors == []
    finally:
        app.on_closing()


def _descendants(widget: Any) -> Iterator[Any]:
    for child in widget.winfo_children():
        yield child
        yield from _descendants(child)


@pytest.fixture
def display(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """The e2e tests' session Xvfb (skips without the binary)."""
    number = request.getfixturevalue("xvfb")
    monkeypatch.setenv("DISPLAY", number)
    monkeypatch.setenv("CHATROOM_GUI_CONFIG", str(tmp_path / "gui.json"))
    return number


from tests.test_gui_e2e import xvfb  # noqa: E402,F401  (the session-wide X server fixture)
