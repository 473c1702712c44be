"""Configuration: defaults < TOML file (``--config``) < ``CHATROOM_*`` environment
variables < command-line flags. Every key is documented in docs/configuration.md.

The file is flat (``port = 6667``) and may hold ``[[oper]]`` tables. An
environment variable is the key in upper case with ``CHATROOM_`` in front
(``CHATROOM_PORT=7000``); lists are comma-separated there.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "CHATROOM_"


@dataclass(slots=True)
class Config:
    # -- identity and listening
    host: str = "0.0.0.0"
    port: int = 6667
    workers: int = 4
    server_name: str = "irc.chatroom.local"
    network: str = "Chatroom"
    password: str = ""
    motd_file: str = ""
    data_dir: str = "data"
    log_level: str = "INFO"
    log_format: str = "text"
    admin_location: str = ""
    admin_email: str = ""
    config: str = ""
    # -- names and limits advertised in ISUPPORT
    nick_len: int = 30
    user_len: int = 16
    channel_len: int = 64
    topic_len: int = 390
    away_len: int = 390
    kick_len: int = 390
    max_targets: int = 4
    max_channels: int = 50
    max_modes: int = 4
    max_list: int = 100
    # -- connections
    max_connections: int = 60000
    max_per_ip: int = 50
    per_ip_exempt: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    registration_timeout: float = 30.0
    ping_interval: float = 120.0
    ping_timeout: float = 60.0
    sendq: int = 1 << 20
    socket_sndbuf: int = 0
    conn_burst: int = 10  # connections per address at once, then conn_rate per second (per_ip_exempt skips it)
    conn_rate: float = 0.5
    # -- TLS (on when tls_cert is set; docs/security.md)
    tls_port: int = 6697
    tls_cert: str = ""
    tls_key: str = ""
    tls_handshake_timeout: float = 10.0  # and the WebSocket opening handshake
    # -- WebSocket (IRCv3 WebSocket: browsers; on when websocket is true)
    websocket: bool = False
    websocket_port: int = 8097
    websocket_tls: bool = False  # wss:// with tls_cert/tls_key on websocket_port (else ws://, e.g. behind a proxy)
    websocket_origins: list[str] = field(default_factory=list)  # allowed Origin values, * wildcards; empty: any
    websocket_proxies: list[str] = field(default_factory=list)  # trusted reverse proxies (addresses, networks)
    websocket_proxy_header: str = "X-Forwarded-For"  # where a trusted proxy names the client's address
    # -- privacy and abuse
    cloak: bool = True  # show other users a keyed hash of each address, not the address
    cloak_key: str = ""  # empty: generated once and kept in data_dir/cloak.key
    # shown as they are: a loopback address is the server's own, it tells nothing about the user
    cloak_exempt: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    nick_change_burst: int = 5  # nick changes at once, then one per nick_change_interval seconds
    nick_change_interval: float = 15.0
    # -- failed logins (IDENTIFY, SASL, OPER, PASS): back-off per address and per account
    login_free_attempts: int = 3  # attempts before any wait, then login_backoff, doubling, at most login_backoff_max
    login_backoff: float = 1.0
    login_backoff_max: float = 60.0
    login_backoff_reset: float = 900.0  # seconds without a failure after which an address or account starts over
    login_backoff_exempt: list[str] = field(default_factory=list)  # CIDRs without the per-address back-off
    hash_concurrency: int = 2  # password hashes (scrypt, ~40 ms, 16 MiB each) at once per worker
    hash_wait: float = 5.0  # seconds a login waits for a hashing slot before "try again"
    # -- flood control: a token bucket of lines per client
    flood_burst: int = 20
    flood_rate: float = 4.0
    flood_max_delay: float = 10.0
    flood_exempt: list[str] = field(default_factory=list)
    # -- accounts and history
    account_registration: str = "open"  # open, opers (only operators register accounts) or off
    account_registration_before_connect: bool = True  # REGISTER before the connection is registered
    account_email_required: bool = False  # REGISTER needs an email address
    account_custom_name: bool = True  # the account name may differ from the nick
    password_min_length: int = 6  # shortest password REGISTER and NickServ accept
    sasl_plaintext: str = "loopback"  # SASL PLAIN without TLS: always, loopback or never
    nick_protection_grace: float = 30.0
    history_replay_lines: int = 20
    history_max_age_days: float = 0.0
    history_max_per_target: int = 10000
    history_expire_every: float = 60.0
    chathistory_max: int = 100
    # -- modern clients (IRCv3)
    monitor_max: int = 100  # nicks one client may MONITOR (MONITOR= in 005)
    redact_window: float = 900.0  # seconds a sender may REDACT its own message (0: any time)
    # -- draft/multiline: one message of several lines (0 bytes: the cap is not offered)
    multiline_max_bytes: int = 4096
    multiline_max_lines: int = 32  # 0: no line limit (max-lines not advertised)
    # -- internals
    thread_stack_kib: int = 256
    thread_keep: float = 10.0  # seconds a client thread whose client left waits to serve the next
    bus_batch: int = 2000
    bus_linger: float = 0.01  # seconds: at most one publish() and one fetch() per worker per this
    gil_switch_interval: float = 0.05  # seconds: a worker's sys.setswitchinterval (0: Python's 5 ms)
    max_inbox: int = 100_000
    report_interval: float = 60.0
    # -- observability (docs/operations.md)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    metrics_interval: float = 1.0
    worker_timeout: float = 30.0
    opers: list[dict[str, Any]] = field(default_factory=list)
    # -- cluster mode (docs/cluster.md): on when cluster_url is set
    cluster_url: str = ""  # redis://[user:password@]host:6379/0, rediss:// for TLS
    cluster_password: str = ""  # the Redis password, if not in the URL
    node_name: str = ""  # this node's name in the cluster (empty: the host name); unique per node
    node_timeout: float = 10.0  # seconds without a heartbeat after which a node is declared down
    heartbeat_interval: float = 1.0
    snapshot_every: int = 100_000  # log entries between snapshots (the log before one is trimmed)
    node_index: int = 0  # set at start from Redis (by node_name); not a setting

    def bus_settings(self) -> dict[str, Any]:
        settings = {"max_inbox": self.max_inbox, "channel_len": self.channel_len, "max_channels": self.max_channels,
                    "max_list": self.max_list, "data_dir": self.data_dir,
                    "history_max_age": self.history_max_age_days * 86400,
                    "history_max_per_target": self.history_max_per_target,
                    "history_expire_every": self.history_expire_every}
        if self.cluster_url:
            settings.update({"cluster_url": self.cluster_url, "cluster_password": self.cluster_password,
                             "node_name": self.node_name, "node_timeout": self.node_timeout,
                             "heartbeat_interval": self.heartbeat_interval, "snapshot_every": self.snapshot_every})
        return settings

    def networks(self, name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(c, strict=False) for c in getattr(self, name)]

    def motd_lines(self) -> list[str] | None:
        if not self.motd_file:
            return None
        try:
            return Path(self.motd_file).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return None


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _coerce(name: str, value: Any) -> Any:
    kind = FIELDS[name].type
    if kind == "bool":
        if isinstance(value, str):
            if value.strip().lower() not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
                raise SystemExit(f"chatroom-server: {name} takes true or false, not {value!r}")
            return value.strip().lower() in {"1", "true", "yes", "on"}
        return bool(value)
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "list[str]":
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return [str(v) for v in value]
    if kind == "str":
        return str(value)
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chatroom-server", description="Chat-room IRC server")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="IRC port (default 6667)")
    p.add_argument("--workers", type=int, help="worker processes (default 4)")
    p.add_argument("--server-name", dest="server_name", help="this server's name")
    p.add_argument("--network", help="network name shown to clients")
    p.add_argument("--password", help="server password clients must send with PASS")
    p.add_argument("--motd-file", dest="motd_file", help="message of the day file")
    p.add_argument("--data-dir", dest="data_dir", help="where data is kept")
    p.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument("--log-format", dest="log_format", choices=["text", "json"],
                   help="log lines as plain text (default) or JSON")
    p.add_argument("--metrics-host", dest="metrics_host", help="address of /metrics and /healthz (default 127.0.0.1)")
    p.add_argument("--metrics-port", dest="metrics_port", type=int,
                   help="port of /metrics and /healthz (default 0: off)")
    p.add_argument("--cluster-url", dest="cluster_url",
                   help="Redis URL of the cluster this node joins (default: none, a single server)")
    p.add_argument("--node-name", dest="node_name", help="this node's name in the cluster (default: host name)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other configuration key, e.g. --set sendq=65536 (repeatable)")
    return p


def load(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Build the configuration from file, environment and flags."""
    args = parser().parse_args(argv)
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = args.config or env.get(ENV_PREFIX + "CONFIG", "")
    if path:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        for key, value in raw.items():
            if key == "oper":
                values["opers"] = list(value)
            elif key in FIELDS:
                values[key] = _coerce(key, value)
            else:
                raise SystemExit(f"chatroom-server: unknown configuration key {key!r} in {path}")
        values["config"] = path
    for key in FIELDS:
        if key in {"config", "opers"}:
            continue
        if (raw_env := env.get(ENV_PREFIX + key.upper())) is not None:
            values[key] = _coerce(key, raw_env)
    for key, value in vars(args).items():
        if key not in {"set", "config"} and value is not None:
            values[key] = _coerce(key, value)
    for item in args.set:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in FIELDS or key in {"opers"}:
            raise SystemExit(f"chatroom-server: --set takes KEY=VALUE with a known key, not {item!r}")
        values[key] = _coerce(key, value)
    cfg = Config(**values)
    if cfg.workers < 1:
        raise SystemExit("chatroom-server: --workers must be at least 1")
    return cfg


def in_networks(ip: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether the address ``ip`` (text) is in any of ``networks`` (False for a bad address)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in networks)
