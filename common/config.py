"""One frozen, typed configuration for every zingest process.

Precedence: environment (``ZINGEST_<SECTION>__<KEY>``) > ``config.toml`` > the defaults below.
Unknown sections or keys and values of the wrong type stop start-up with a
:class:`ConfigError` that names the key and the value. Tests pass ``environ``
explicitly instead of touching ``os.environ``.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "ZINGEST_"
# The transports libzmq knows, then an address (checked by libzmq itself when it binds or connects).
ZMQ_ENDPOINT = re.compile(r"(tcp|ipc|inproc|pgm|epgm|vmci|ws|wss|udp)://\S+")


class ConfigError(ValueError):
    """A configuration key is unknown or its value is unusable; the message names it."""


@dataclass(frozen=True)
class DatabaseConfig:
    # Empty: `zingest up` runs PostgreSQL itself (embedded) and hands its DSN to the children.
    dsn: str = field(default="", repr=False)
    # Data directory of the embedded server, relative to the config file's folder.
    embedded_dir: str = "var/pg"
    # SQL files applied by `zingest up` at start (relative to the config file's folder);
    # they must be idempotent (CREATE TABLE IF NOT EXISTS ...).
    schema_files: tuple[str, ...] = ("schema/rides.sql",)


@dataclass(frozen=True)
class GatewayConfig:
    listen: str = "127.0.0.1:8080"
    push_bind: str = "tcp://127.0.0.1:5555"
    status_bind: str = "tcp://127.0.0.1:5556"
    # Tables that may be written; empty means every table in schema public.
    tables: tuple[str, ...] = ()
    # Largest request body accepted, in bytes, once decompressed (413 past it).
    max_body_bytes: int = 64 * 1024 * 1024
    # Most rows in one request (413 past it).
    max_rows: int = 100_000
    # Deepest nesting of arrays and objects inside one value (400 past it).
    max_depth: int = 32
    # Longest string value, in UTF-8 bytes (400 past it).
    max_string_bytes: int = 1024 * 1024
    # Seconds a request body may take to arrive once its headers have (408 past it).
    body_timeout_s: float = 60.0
    # Request bodies being read, checked and journalled at once, in decoded bytes (503 past it).
    max_inflight_bytes: int = 256 * 1024 * 1024
    # Final job statuses kept in memory; older ones are answered from the ledger table.
    status_capacity: int = 100_000
    # Frames queued toward sinks before a POST is answered 503 (ZeroMQ send high-water mark).
    send_hwm: int = 1000
    # A job with no final status after this many seconds is sent again.
    redelivery_timeout_s: float = 30.0
    # Seconds a client is told to wait (Retry-After) when the gateway is full.
    retry_after_s: int = 1
    # Accepted-but-unfinished work the gateway holds before it answers 503 (rows, and frame bytes).
    max_pending_rows: int = 2_000_000
    max_pending_bytes: int = 512 * 1024 * 1024
    # On SIGTERM: seconds to wait for in-flight jobs to become final before exiting.
    drain_timeout_s: float = 10.0
    # "disk": each accepted job is in the fsynced journal before its 202 and survives a crash;
    # "memory": faster, but jobs not yet committed are lost if the gateway process dies.
    durability: str = "disk"
    # Journal folder (relative to the config file's folder) and segment size in bytes.
    journal_dir: str = "var/journal"
    journal_segment_bytes: int = 64 * 1024 * 1024
    # Seconds an Idempotency-Key is remembered in memory (the ledger keeps committed keys for good).
    idempotency_ttl_s: float = 86_400.0
    # ?wait=true: seconds a request may wait for its job to become final before a 504.
    wait_timeout_s: float = 30.0


@dataclass(frozen=True)
class SinkConfig:
    count: int = 2
    pull_connect: tuple[str, ...] = ("tcp://127.0.0.1:5555",)
    status_connect: tuple[str, ...] = ("tcp://127.0.0.1:5556",)
    # A batch (one COPY transaction) closes at this many rows ...
    batch_rows: int = 5000
    # ... or this many milliseconds after its first frame arrived, whichever comes first.
    batch_linger_ms: int = 20
    # Frames a sink holds in its receive queue (ZeroMQ receive high-water mark).
    recv_hwm: int = 100
    # "host:port" of a sink's Prometheus /metrics; `zingest up` gives sink i port+i. Empty: off.
    metrics_listen: str = "127.0.0.1:9101"


@dataclass(frozen=True)
class LogConfig:
    level: str = "INFO"


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = DatabaseConfig()
    gateway: GatewayConfig = GatewayConfig()
    sink: SinkConfig = SinkConfig()
    log: LogConfig = LogConfig()
    # Folder that relative paths in the config are resolved against.
    base_dir: Path = field(default=Path("."), compare=False)

    def path(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.base_dir / p


_SECTIONS: dict[str, type] = {
    name: hint for name, hint in typing.get_type_hints(Config).items() if name != "base_dir"
}


def _section_types(cls: type) -> dict[str, typing.Any]:
    return typing.get_type_hints(cls)


def _env_list(where: str, text: str) -> list[str]:
    """A list from the environment: comma-separated, or written as a TOML array ("[\"a\", \"b\"]")."""
    if not text.lstrip().startswith("["):
        return [v.strip() for v in text.split(",") if v.strip()]
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: expected a comma-separated list or a TOML array, got {text!r} ({exc})") from None


def _coerce(where: str, value: object, hint: typing.Any, from_env: bool) -> object:
    """Check (file) or parse (environment) one value against its annotated type."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if from_env:
            assert isinstance(value, str)
            value = _env_list(where, value)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    if hint is bool:
        if from_env and isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if from_env and isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        number: float | None = None
        if from_env and isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        # nan and inf parse as floats but compare false or absurdly (nan <= 0 is False): reject them.
        if number is None or not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {hint!r} at {where}")


def _check(cfg: Config) -> None:
    g, s = cfg.gateway, cfg.sink
    for key, address in (("gateway.listen", g.listen), ("sink.metrics_listen", s.metrics_listen)):
        if key == "sink.metrics_listen" and not address:
            continue
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{key}: expected 'host:port', got {address!r}")
    if g.durability not in ("disk", "memory"):
        raise ConfigError(f"gateway.durability: expected 'disk' or 'memory', got {g.durability!r}")
    for key, endpoint in (("gateway.push_bind", g.push_bind), ("gateway.status_bind", g.status_bind)):
        if not ZMQ_ENDPOINT.fullmatch(endpoint):
            raise ConfigError(f"{key}: expected a ZeroMQ endpoint like 'tcp://127.0.0.1:5555', got {endpoint!r}")
    for key, endpoints in (("sink.pull_connect", s.pull_connect), ("sink.status_connect", s.status_connect)):
        if not endpoints:
            raise ConfigError(f"{key}: needs at least one endpoint")
        for endpoint in endpoints:
            if not ZMQ_ENDPOINT.fullmatch(endpoint):
                raise ConfigError(f"{key}: expected ZeroMQ endpoints like 'tcp://127.0.0.1:5555', got {endpoint!r}")
    positive = {
        "sink.count": s.count,
        "sink.batch_rows": s.batch_rows,
        "sink.recv_hwm": s.recv_hwm,
        "gateway.max_body_bytes": g.max_body_bytes,
        "gateway.max_rows": g.max_rows,
        "gateway.max_depth": g.max_depth,
        "gateway.max_string_bytes": g.max_string_bytes,
        "gateway.body_timeout_s": g.body_timeout_s,
        "gateway.max_inflight_bytes": g.max_inflight_bytes,
        "gateway.status_capacity": g.status_capacity,
        "gateway.send_hwm": g.send_hwm,
        "gateway.redelivery_timeout_s": g.redelivery_timeout_s,
        "gateway.retry_after_s": g.retry_after_s,
        "gateway.max_pending_rows": g.max_pending_rows,
        "gateway.max_pending_bytes": g.max_pending_bytes,
        "gateway.journal_segment_bytes": g.journal_segment_bytes,
        "gateway.idempotency_ttl_s": g.idempotency_ttl_s,
        "gateway.wait_timeout_s": g.wait_timeout_s,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be greater than 0, got {value!r}")
    if g.drain_timeout_s < 0:
        raise ConfigError(f"gateway.drain_timeout_s: must be 0 or more, got {g.drain_timeout_s!r}")
    if s.batch_linger_ms < 0:
        raise ConfigError(f"sink.batch_linger_ms: must be 0 or more, got {s.batch_linger_ms!r}")
    if cfg.log.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log.level: expected DEBUG, INFO, WARNING or ERROR, got {cfg.log.level!r}")


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the Config from defaults, then the TOML file at ``path`` (if any), then ``environ``."""
    environ = os.environ if environ is None else environ
    raw: dict[str, dict[str, tuple[object, bool]]] = {name: {} for name in _SECTIONS}
    base_dir = Path(".").resolve()
    if path is not None:
        file = Path(path)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {file}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
        base_dir = file.resolve().parent
        for section, values in data.items():
            if section not in _SECTIONS:
                raise ConfigError(f"unknown config section [{section}] (known: {', '.join(_SECTIONS)})")
            if not isinstance(values, dict):
                raise ConfigError(f"[{section}] must be a table of keys")
            for key, value in values.items():
                raw[section][key] = (value, False)
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        section, sep, key = name[len(ENV_PREFIX):].lower().partition("__")
        if not sep:
            continue  # ZINGEST_TEST_DSN and friends belong to tools, not to this config
        if section not in _SECTIONS:
            raise ConfigError(f"{name}: unknown config section {section!r}")
        raw[section][key] = (value, True)

    sections = {}
    for section, cls in _SECTIONS.items():
        hints = _section_types(cls)
        kwargs = {}
        for key, (value, from_env) in raw[section].items():
            if key not in hints:
                raise ConfigError(f"unknown config key {section}.{key} (known: {', '.join(hints)})")
            kwargs[key] = _coerce(f"{section}.{key}", value, hints[key], from_env)
        sections[section] = cls(**kwargs)
    cfg = Config(**sections, base_dir=base_dir)
    _check(cfg)
    return cfg
