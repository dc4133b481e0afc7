"""Tests of settings: defaults, YAML file, FRONTLINE_* overrides, error sources, masked secrets."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from daemon.cli import cli
from daemon.config import Settings, effective_settings, load_settings
from daemon.errors import ConfigInvalid, ConfigProblem

MASK = "**********"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every FRONTLINE_* variable of the surrounding environment."""
    for name in list(os.environ):
        if name.upper().startswith("FRONTLINE_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "frontline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path | None) -> list[ConfigProblem]:
    with pytest.raises(ConfigInvalid) as info:
        load_settings(path)
    assert info.value.problems
    for problem in info.value.problems:
        assert str(problem) in str(info.value)
    return info.value.problems


def test_zero_config_defaults() -> None:
    """Test that no file and no environment gives the documented defaults."""
    settings = load_settings()
    assert settings.data_dir == Path("data")
    assert settings.log_level == "INFO"
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.topic_prefix) == (
        "127.0.0.1",
        1883,
        "devices",
    )
    assert settings.mqtt.password is None
    assert settings.mqtt.shared_group is None
    assert (settings.http.enabled, settings.http.port, settings.http.token) == (True, 8480, None)
    assert settings.store.kind == "sqlite"
    assert settings.store.retention == 30 * 86400
    assert settings.ingest.max_payload_bytes == 256 * 1024
    assert settings.devices.inactivity_timeout == 600.0
    assert settings == Settings()


def test_yaml_file(tmp_path: Path) -> None:
    """Test that a YAML file sets nested values and durations are parsed."""
    path = write(
        tmp_path,
        """\
data_dir: /var/lib/frontline
log_level: DEBUG
mqtt:
  host: broker.example
  port: 8883
  reconnect_max: 2m
store:
  retention: 7d
devices:
  inactivity_timeout: 90   # plain seconds
""",
    )
    settings = load_settings(path)
    assert settings.data_dir == Path("/var/lib/frontline")
    assert settings.log_level == "DEBUG"
    assert (settings.mqtt.host, settings.mqtt.port) == ("broker.example", 8883)
    assert settings.mqtt.reconnect_max == 120.0
    assert settings.store.retention == 7 * 86400
    assert settings.devices.inactivity_timeout == 90.0
    assert settings.http.port == 8480  # untouched default


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_yaml_file_means_defaults(tmp_path: Path, text: str) -> None:
    """Test that an empty file is the same as no file."""
    assert load_settings(write(tmp_path, text)) == load_settings()


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that FRONTLINE_* variables win over the file and the rest of the file is kept."""
    path = write(tmp_path, "mqtt:\n  host: from-file\n  port: 1884\nlog_level: ERROR\n")
    monkeypatch.setenv("FRONTLINE_MQTT__PORT", "1885")
    monkeypatch.setenv("FRONTLINE_LOG_LEVEL", "WARNING")
    settings = load_settings(path)
    assert (settings.mqtt.host, settings.mqtt.port) == ("from-file", 1885)
    assert settings.log_level == "WARNING"


def test_nested_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that `__` nests environment variables into sections, durations included."""
    monkeypatch.setenv("FRONTLINE_DEVICES__INACTIVITY_TIMEOUT", "2m")
    monkeypatch.setenv("FRONTLINE_MQTT__SHARED_GROUP", "ingest")
    monkeypatch.setenv("FRONTLINE_HTTP__ENABLED", "false")
    settings = load_settings()
    assert settings.devices.inactivity_timeout == 120.0
    assert settings.mqtt.shared_group == "ingest"
    assert settings.http.enabled is False


BAD_YAML = [
    pytest.param("mqtt:\n  host: [a\n", ":3:1", id="unclosed-flow"),
    pytest.param('mqtt:\n  host: "abc\n', ":3:1", id="unclosed-quote"),
    pytest.param("mqtt:\n  host: a\n  host: b\n", ":3:3", id="duplicate-key"),
    pytest.param("mqtt:\n  host: a\n port: 1\n", ":3:", id="bad-indent"),
]


@pytest.mark.parametrize(("text", "where"), BAD_YAML)
def test_bad_yaml_syntax(tmp_path: Path, text: str, where: str) -> None:
    """Test that a YAML syntax error names the file, line and column."""
    path = write(tmp_path, text)
    [problem] = problems_of(path)
    assert problem.source.startswith(f"{path}{where}")
    assert problem.source.count(":") == 2
    assert "not valid YAML" in problem.message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_file_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    """Test that a file that is not a mapping of keys is rejected with its path."""
    path = write(tmp_path, text)
    [problem] = problems_of(path)
    assert problem.source == str(path)
    assert "mapping" in problem.message


UNKNOWN = [
    pytest.param("mqttt:\n  host: x\n", "mqttt", 1, id="top-level"),
    pytest.param("log_level: INFO\nmqtt:\n  host: x\n  hots: y\n", "mqtt.hots", 4, id="nested"),
]


@pytest.mark.parametrize(("text", "key", "line"), UNKNOWN)
def test_unknown_key(tmp_path: Path, text: str, key: str, line: int) -> None:
    """Test that an unknown key is reported as such with its file:line."""
    path = write(tmp_path, text)
    [problem] = problems_of(path)
    assert problem == ConfigProblem(key, "unknown key", f"{path}:{line}")


WRONG_TYPES = [
    pytest.param("mqtt:\n  host: x\n  port: abc\n", "mqtt.port", 3, "integer", id="port-text"),
    pytest.param("mqtt:\n  port: 70000\n", "mqtt.port", 2, "65535", id="port-range"),
    pytest.param("log_level: LOUD\n", "log_level", 1, "DEBUG", id="literal"),
    pytest.param("store:\n  retention: 5 minutes\n", "store.retention", 2, "duration", id="dur"),
    pytest.param("store:\n  retention: true\n", "store.retention", 2, "duration", id="dur-bool"),
    pytest.param("store:\n  retention: [1]\n", "store.retention", 2, "duration", id="dur-list"),
    pytest.param("store:\n  retention:\n", "store.retention", 2, "duration", id="dur-null"),
    pytest.param("store:\n  retention: -5s\n", "store.retention", 2, "duration", id="dur-neg"),
    pytest.param("store:\n  retention: .inf\n", "store.retention", 2, "finite", id="dur-inf"),
    pytest.param("store:\n  retention: 1e308\n", "store.retention", 2, "less", id="dur-huge"),
    pytest.param("mqtt: 5\n", "mqtt", 1, "", id="section-not-mapping"),
    pytest.param("mqtt:\n  topic_prefix: a/+/b\n", "mqtt.topic_prefix", 2, "", id="prefix"),
]


@pytest.mark.parametrize(("text", "key", "line", "words"), WRONG_TYPES)
def test_wrong_type_names_key_and_line(
    tmp_path: Path, text: str, key: str, line: int, words: str
) -> None:
    """Test that a value of the wrong type or range names its key and file:line."""
    path = write(tmp_path, text)
    [problem] = problems_of(path)
    assert (problem.key, problem.source) == (key, f"{path}:{line}")
    assert words in problem.message


def test_every_problem_is_reported(tmp_path: Path) -> None:
    """Test that all problems of a file are reported at once, not just the first."""
    path = write(tmp_path, "mqtt:\n  port: x\n  bogus: 1\nhttp:\n  port: -1\n")
    problems = problems_of(path)
    assert {(p.key, p.source) for p in problems} == {
        ("mqtt.port", f"{path}:2"),
        ("mqtt.bogus", f"{path}:3"),
        ("http.port", f"{path}:5"),
    }


BAD_ENV = [
    pytest.param("FRONTLINE_MQTT__PORT", "abc", "mqtt.port", id="nested-int"),
    pytest.param("FRONTLINE_LOG_LEVEL", "LOUD", "log_level", id="top-level"),
    pytest.param("FRONTLINE_STORE__RETENTION", "forever", "store.retention", id="duration"),
    pytest.param("FRONTLINE_MQTT__NOPE", "1", "mqtt.nope", id="unknown-nested-key"),
]


@pytest.mark.parametrize(("variable", "value", "key"), BAD_ENV)
def test_bad_env_var_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str
) -> None:
    """Test that a bad environment value names the variable even when the file has the key."""
    path = write(tmp_path, "mqtt:\n  port: 1884\nlog_level: INFO\nstore:\n  retention: 1d\n")
    monkeypatch.setenv(variable, value)
    [problem] = problems_of(path)
    assert (problem.key, problem.source) == (key, f"environment {variable}")


def test_missing_file(tmp_path: Path) -> None:
    """Test that a missing file is a clear ConfigInvalid naming the path, not a traceback."""
    path = tmp_path / "nope.yaml"
    [problem] = problems_of(path)
    assert problem.source == str(path)
    assert "cannot read" in problem.message
    assert "No such file" in problem.message


SECRETS = "mqtt:\n  username: svc\n  password: s3cret-pw\nhttp:\n  token: t0ken-xyz\n"


def test_secrets_are_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that effective_settings masks mqtt.password and http.token but keeps them usable."""
    monkeypatch.setenv("FRONTLINE_HTTP__TOKEN", "env-t0ken")
    settings = load_settings(write(tmp_path, SECRETS))
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "s3cret-pw"
    assert settings.http.token is not None
    assert settings.http.token.get_secret_value() == "env-t0ken"
    data = effective_settings(settings)
    assert data["mqtt"]["password"] == MASK
    assert data["http"]["token"] == MASK
    assert data["mqtt"]["username"] == "svc"
    dumped = orjson.dumps(data)
    assert b"s3cret-pw" not in dumped
    assert b"t0ken" not in dumped
    assert "s3cret-pw" not in repr(settings)


def test_unset_secrets_stay_null() -> None:
    """Test that an unset secret is shown as null, not as a mask."""
    data = effective_settings(load_settings())
    assert data["mqtt"]["password"] is None
    assert data["http"]["token"] is None


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_cli_config_show_masks_secrets(tmp_path: Path, as_json: bool) -> None:
    """Test that `frontline config show` prints the effective settings with secrets masked."""
    path = write(tmp_path, SECRETS + "  port: 9999\n")
    args = ["--config", str(path), "config", "show"] + (["--json"] if as_json else [])
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "s3cret-pw" not in result.output
    assert "t0ken-xyz" not in result.output
    assert MASK in result.output
    if as_json:
        data = orjson.loads(result.output)
        assert data["http"]["port"] == 9999
        assert data["mqtt"]["password"] == MASK
    else:
        assert "  port: 9999" in result.output
        assert "  password: " + MASK in result.output


def test_cli_reports_bad_config(tmp_path: Path) -> None:
    """Test that the CLI exits non-zero with the key and file:line of a bad setting."""
    path = write(tmp_path, "mqtt:\n  port: abc\n")
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "show"])
    assert result.exit_code == 1
    assert f"{path}:2: mqtt.port" in result.output
    assert "Traceback" not in result.output


def test_cli_reports_missing_config(tmp_path: Path) -> None:
    """Test that the CLI exits non-zero naming a missing config file."""
    path = tmp_path / "missing.yaml"
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "show"])
    assert result.exit_code == 1
    assert str(path) in result.output
    assert "cannot read" in result.output
