"""common.config: defaults, config.toml, ZINGEST_<SECTION>__<KEY> overrides, and errors that name key and value."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from common.config import Config, ConfigError, load_config
from tests.conftest import ROOT

CONFIG_TOML = ROOT / "config.toml"


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load_with_no_file() -> None:
    cfg = load_config(None, environ={})
    assert cfg == Config()
    assert cfg.sink.batch_rows == 5000
    assert cfg.gateway.listen == "127.0.0.1:8080"
    assert cfg.database.schema_files == ("schema/rides.sql",)
    assert cfg.base_dir == Path(".").resolve()


def test_repo_config_toml_states_the_defaults() -> None:
    cfg = load_config(CONFIG_TOML, environ={})
    defaults = Config()
    stated = tomllib.loads(CONFIG_TOML.read_text(encoding="utf-8"))
    assert set(stated) == {"database", "gateway", "sink", "log"}
    compared = 0
    for section, values in stated.items():
        for key, value in values.items():
            expected = getattr(getattr(defaults, section), key)
            if isinstance(value, list):
                value = tuple(value)
            assert value == expected, f"config.toml states {section}.{key} = {value!r}, the default is {expected!r}"
            assert getattr(getattr(cfg, section), key) == expected
            compared += 1
    assert compared >= 20  # the file documents (nearly) every key, so this compared something real
    # Relative paths resolve against the file's folder, not the working directory.
    assert cfg.base_dir == ROOT
    assert cfg.path("schema/rides.sql") == ROOT / "schema" / "rides.sql"
    assert cfg.path("/abs/x.sql") == Path("/abs/x.sql")


def test_file_overrides_defaults_and_env_overrides_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[sink]\ncount = 3\nbatch_rows = 100\n[gateway]\nlisten = "127.0.0.1:9000"\n')
    cfg = load_config(path, environ={})
    assert (cfg.sink.count, cfg.sink.batch_rows, cfg.gateway.listen) == (3, 100, "127.0.0.1:9000")
    cfg = load_config(path, environ={
        "ZINGEST_SINK__COUNT": "7",
        "ZINGEST_GATEWAY__LISTEN": "0.0.0.0:9100",
        "ZINGEST_GATEWAY__REDELIVERY_TIMEOUT_S": "2.5",
        "ZINGEST_GATEWAY__MAX_PENDING_ROWS": "1_000",
        "ZINGEST_DATABASE__DSN": "postgresql://u@h/db",
    })
    assert cfg.sink.count == 7
    assert cfg.sink.batch_rows == 100  # from the file, untouched by the environment
    assert cfg.gateway.listen == "0.0.0.0:9100"
    assert cfg.gateway.redelivery_timeout_s == 2.5
    assert cfg.gateway.max_pending_rows == 1000
    assert cfg.database.dsn == "postgresql://u@h/db"
    assert cfg.base_dir == tmp_path.resolve()


def test_environment_names_are_case_insensitive_and_foreign_variables_are_ignored() -> None:
    cfg = load_config(None, environ={
        "zingest_sink__count": "5",  # not ours: the prefix is upper-case
        "ZINGEST_sink__RECV_HWM": "9",
        "ZINGEST_TEST_DSN": "postgresql://elsewhere/db",  # a tool's variable, no section separator
        "PATH": "/usr/bin",
    })
    assert cfg.sink.count == Config().sink.count
    assert cfg.sink.recv_hwm == 9
    assert cfg.database.dsn == ""


def test_lists_from_environment_are_comma_separated() -> None:
    cfg = load_config(None, environ={
        "ZINGEST_SINK__PULL_CONNECT": "tcp://127.0.0.1:1, tcp://127.0.0.1:2,,",
        "ZINGEST_SINK__STATUS_CONNECT": "tcp://127.0.0.1:3,tcp://127.0.0.1:4",
        "ZINGEST_GATEWAY__TABLES": "rides,public.other",
        "ZINGEST_DATABASE__SCHEMA_FILES": "",
    })
    assert cfg.sink.pull_connect == ("tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
    assert cfg.sink.status_connect == ("tcp://127.0.0.1:3", "tcp://127.0.0.1:4")
    assert cfg.gateway.tables == ("rides", "public.other")
    assert cfg.database.schema_files == ()


def test_lists_from_environment_may_be_toml_arrays() -> None:
    cfg = load_config(None, environ={"ZINGEST_SINK__PULL_CONNECT": '["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"]',
                                     "ZINGEST_GATEWAY__TABLES": " []"})
    assert cfg.sink.pull_connect == ("tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
    assert cfg.gateway.tables == ()


# (toml text, environ, words the message must contain)
BAD = {
    "unknown section in file": ("[gatewya]\nlisten = '127.0.0.1:1'\n", {}, ["gatewya"]),
    "unknown section in env": ("", {"ZINGEST_GATEWYA__LISTEN": "x"}, ["ZINGEST_GATEWYA__LISTEN", "gatewya"]),
    # Unknown keys are named but their values are not echoed: a mistyped secret key
    # (ZINGEST_DATABASE__DNS=postgresql://u:password@...) must not land in a log.
    "unknown key in file": ("[sink]\nbatch_row = 10\n", {}, ["sink.batch_row"]),
    "unknown key in env": ("", {"ZINGEST_SINK__BATCH_ROW": "10"}, ["sink.batch_row"]),
    "string for int in file": ("[sink]\ncount = 'four'\n", {}, ["sink.count", "'four'"]),
    "bool for int in file": ("[sink]\ncount = true\n", {}, ["sink.count", "True"]),
    "float for int in file": ("[sink]\nbatch_rows = 1.5\n", {}, ["sink.batch_rows", "1.5"]),
    "int for string in file": ("[log]\nlevel = 3\n", {}, ["log.level", "3"]),
    "string for list in file": ("[gateway]\ntables = 'rides'\n", {}, ["gateway.tables", "'rides'"]),
    "ints in list in file": ("[sink]\npull_connect = [1, 2]\n", {}, ["sink.pull_connect", "[1, 2]"]),
    "string for float in file": ("[gateway]\nredelivery_timeout_s = 'soon'\n", {},
                                 ["gateway.redelivery_timeout_s", "'soon'"]),
    "section not a table in file": ("sink = 3\n", {}, ["[sink]"]),
    "bad int in env": ("", {"ZINGEST_SINK__COUNT": "four"}, ["sink.count", "'four'"]),
    "bad float in env": ("", {"ZINGEST_GATEWAY__DRAIN_TIMEOUT_S": "10s"}, ["gateway.drain_timeout_s", "'10s'"]),
    "nan in env": ("", {"ZINGEST_GATEWAY__REDELIVERY_TIMEOUT_S": "nan"}, ["gateway.redelivery_timeout_s", "nan"]),
    "inf in file": ("[gateway]\ndrain_timeout_s = inf\n", {}, ["gateway.drain_timeout_s", "inf"]),
    "listen without port": ("[gateway]\nlisten = 'localhost'\n", {}, ["gateway.listen", "'localhost'"]),
    "listen without host": ("", {"ZINGEST_GATEWAY__LISTEN": ":8080"}, ["gateway.listen", "':8080'"]),
    "listen port 0": ("[gateway]\nlisten = '127.0.0.1:0'\n", {}, ["gateway.listen", "'127.0.0.1:0'"]),
    "listen port too big": ("", {"ZINGEST_GATEWAY__LISTEN": "127.0.0.1:65536"}, ["gateway.listen", "65536"]),
    "listen port not a number": ("[gateway]\nlisten = '127.0.0.1:http'\n", {}, ["gateway.listen", "'127.0.0.1:http'"]),
    "push_bind not an endpoint": ("", {"ZINGEST_GATEWAY__PUSH_BIND": "127.0.0.1:5555"},
                                  ["gateway.push_bind", "'127.0.0.1:5555'"]),
    "array in env not closed": ("", {"ZINGEST_SINK__PULL_CONNECT": '["tcp://127.0.0.1:1"'},
                                ["sink.pull_connect", "TOML array"]),
    "endpoint without transport": ("", {"ZINGEST_SINK__STATUS_CONNECT": "[tcp://127.0.0.1:1]"},
                                   ["sink.status_connect"]),
    "unknown transport": ("[gateway]\nstatus_bind = 'http://127.0.0.1:1'\n", {},
                          ["gateway.status_bind", "'http://127.0.0.1:1'"]),
    "no pull endpoint": ("", {"ZINGEST_SINK__PULL_CONNECT": " , "}, ["sink.pull_connect"]),
    "zero sinks": ("[sink]\ncount = 0\n", {}, ["sink.count", "0"]),
    "negative batch rows": ("", {"ZINGEST_SINK__BATCH_ROWS": "-5"}, ["sink.batch_rows", "-5"]),
    "zero recv hwm": ("", {"ZINGEST_SINK__RECV_HWM": "0"}, ["sink.recv_hwm", "0"]),
    "zero send hwm": ("[gateway]\nsend_hwm = 0\n", {}, ["gateway.send_hwm", "0"]),
    "zero status capacity": ("[gateway]\nstatus_capacity = 0\n", {}, ["gateway.status_capacity", "0"]),
    "zero body": ("", {"ZINGEST_GATEWAY__MAX_BODY_BYTES": "0"}, ["gateway.max_body_bytes", "0"]),
    "zero pending rows": ("", {"ZINGEST_GATEWAY__MAX_PENDING_ROWS": "0"}, ["gateway.max_pending_rows", "0"]),
    "zero redelivery": ("[gateway]\nredelivery_timeout_s = 0.0\n", {}, ["gateway.redelivery_timeout_s", "0.0"]),
    "negative linger": ("[sink]\nbatch_linger_ms = -1\n", {}, ["sink.batch_linger_ms", "-1"]),
    "negative drain": ("", {"ZINGEST_GATEWAY__DRAIN_TIMEOUT_S": "-1"}, ["gateway.drain_timeout_s", "-1.0"]),
    "bad log level": ("[log]\nlevel = 'LOUD'\n", {}, ["log.level", "'LOUD'"]),
}


@pytest.mark.parametrize("toml,environ,words", BAD.values(), ids=BAD.keys())
def test_bad_config_raises_config_error_naming_key_and_value(
    tmp_path: Path, toml: str, environ: dict[str, str], words: list[str]
) -> None:
    path = write_toml(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ)
    for word in words:
        assert word in str(info.value)


def test_env_value_is_checked_even_when_the_file_is_fine(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[sink]\ncount = 2\n")
    assert load_config(path, environ={}).sink.count == 2
    with pytest.raises(ConfigError, match=r"sink\.count.*'two'"):
        load_config(path, environ={"ZINGEST_SINK__COUNT": "two"})


def test_zero_linger_and_zero_drain_are_allowed() -> None:
    cfg = load_config(None, environ={"ZINGEST_SINK__BATCH_LINGER_MS": "0", "ZINGEST_GATEWAY__DRAIN_TIMEOUT_S": "0"})
    assert cfg.sink.batch_linger_ms == 0
    assert cfg.gateway.drain_timeout_s == 0.0


def test_missing_file_and_bad_toml_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write_toml(tmp_path, "[sink\ncount = 2\n"), environ={})


def test_config_is_frozen() -> None:
    cfg = load_config(None, environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sink = cfg.sink  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sink.count = 9  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.database.dsn = "postgresql://x"  # type: ignore[misc]
    assert cfg.sink.count == Config().sink.count


def test_dsn_is_not_in_repr() -> None:
    secret = "postgresql://zing:s3cr3t-pw@db.example:5432/rides"
    cfg = load_config(None, environ={"ZINGEST_DATABASE__DSN": secret})
    assert cfg.database.dsn == secret
    for text in (repr(cfg), str(cfg), repr(cfg.database)):
        assert "s3cr3t-pw" not in text
        assert "db.example" not in text
    assert "embedded_dir" in repr(cfg)  # the rest is still shown
