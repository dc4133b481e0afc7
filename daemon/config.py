"""Settings: one pydantic-settings model, from a YAML file and `FRONTLINE_*` environment variables.

Environment variables override the file (`FRONTLINE_MQTT__PORT=1884`); both are validated
together and every problem is reported with its key and its source (file:line or variable).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from daemon.adapters.webhook import WebhookSettings
from daemon.core.durations import format_duration, parse_duration
from daemon.core.rulefmt import MAX_WINDOW_S
from daemon.core.twin import MAX_DEVICES, MAX_NAMES
from daemon.errors import ConfigInvalid, ConfigProblem

ENV_PREFIX = "FRONTLINE_"
#: FRONTLINE_* variables that are not settings (the CLI reads them itself)
_NOT_SETTINGS = {"FRONTLINE_CONFIG"}
#: 100 years: longer durations mean "never" and overflow epoch-ms arithmetic (retention cut-offs)
MAX_SECONDS = 100 * 365 * 86400


def _duration(value: object) -> float:
    # pydantic reports ValueError only; a YAML bool, list or null must not crash loading.
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return parse_duration(value)
    raise ValueError(f"not a duration: {str(value)[:40]!r} (use e.g. 30s, 5m, 2h, 7d)")


Seconds = Annotated[float, BeforeValidator(_duration), Field(ge=0, le=MAX_SECONDS)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = Field("frontline", min_length=1, max_length=128)
    topic_prefix: str = Field("devices", pattern=r"^[A-Za-z0-9_.:-]+(/[A-Za-z0-9_.:-]+)*$")
    #: MQTT protocol version; 3.1.1 only for brokers without v5 (the demo's embedded broker)
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive: int = Field(30, ge=5, le=3600)
    #: how long the broker keeps the daemon's session (and queues telemetry) while it is away
    session_expiry: Seconds = 7 * 86400
    #: MQTT v5 receive maximum: unacknowledged QoS 1 messages the broker may send ahead
    receive_maximum: int = Field(65535, ge=1, le=65535)
    reconnect_min: Seconds = 0.5
    reconnect_max: Seconds = 30.0
    #: join an MQTT shared subscription group so several ingest workers split the telemetry
    shared_group: str | None = None


class HttpSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8480, ge=0, le=65535)
    token: SecretStr | None = None


class StoreSettings(_Section):
    kind: Literal["sqlite"] = "sqlite"
    #: telemetry points older than this are deleted; devices without meta silent this long too
    retention: Seconds = 30 * 86400
    batch_points: int = Field(5000, ge=1, le=1_000_000)
    #: alert events, resolved tickets, notices and finished remediations are kept this long
    history_retention: Seconds = 90 * 86400


class IngestSettings(_Section):
    max_payload_bytes: int = Field(256 * 1024, ge=64)
    max_batch: int = Field(1000, ge=1)
    #: arrays of numbers in payloads: `ignore` (dropped, counted) or `index` (`name_0`, ...)
    arrays: Literal["ignore", "index"] = "ignore"
    dead_letter_retention: Seconds = 7 * 86400
    #: dead letters kept at most (rows, and bytes of topic + detail + payload); oldest go first
    dead_letter_max_rows: int = Field(10_000, ge=1)
    dead_letter_max_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    #: seconds allowed to drain and flush on SIGTERM before the rest is left to the broker
    drain_timeout: Seconds = 10.0


class MappingsSettings(_Section):
    """Devices outside the native topic layout: mappings and shipped presets (docs/devices.md)."""

    #: mapping files or directories of them (`*.yaml` directly inside)
    paths: tuple[Path, ...] = (Path("mappings"),)
    #: shipped presets to enable by name (zigbee2mqtt, tasmota, shelly_gen2, ...)
    presets: tuple[str, ...] = ()
    #: decode Sparkplug B (`spBv1.0/#`): births, data with aliases, deaths
    sparkplug: bool = False


class DeviceSettings(_Section):
    #: seconds of silence after which a device counts as offline (meta `inactivity_timeout` wins)
    inactivity_timeout: Seconds = 600.0
    #: devices known at most: messages from new ids past this are dead-lettered (`cardinality`)
    max_known: int = Field(MAX_DEVICES, ge=1)
    #: metric and attribute names per device at most: new names past this are dead-lettered
    max_metrics: int = Field(MAX_NAMES, ge=1)


class RulesSettings(_Section):
    #: rule files or directories of them (`*.yaml` directly inside)
    paths: tuple[Path, ...] = (Path("rules"),)
    #: reload when a rule file changes (checked every `watch_interval`)
    watch: bool = True
    watch_interval: Seconds = 2.0
    #: after the daemon or the broker was away, offline/absent conditions wait this long
    outage_grace: Seconds = 120.0
    #: resolved alerts stay visible this long so that "resolved" is delivered
    resolved_retention: Seconds = 900.0
    #: firings within `flap_window` that mark an alert flapping
    flap_threshold: int = Field(4, ge=2)
    flap_window: Seconds = 3600.0
    #: a flapping alert resolves only after its condition stayed false this long
    flap_hold: Seconds = 900.0
    #: devices evaluated before yielding to the event loop (keeps ingest flowing)
    chunk: int = Field(500, ge=1)
    #: the longest window (and `for`) a rule may use; at most `store.retention`
    max_window: Seconds = MAX_WINDOW_S


class ModelsSettings(_Section):
    """Learned models: specs in `models/`, versions in `<data_dir>/models` (docs/models.md)."""

    enabled: bool = True
    #: model spec files or directories of them (`*.yaml` directly inside)
    paths: tuple[Path, ...] = (Path("models"),)
    #: trained versions kept per model (the current one is never deleted)
    keep_versions: int = Field(5, ge=1)
    #: train a model that has no version yet once its history suffices (checked every `retry`)
    train_missing: bool = True
    #: how often an untrained model, or one whose training failed, is tried again
    retry: Seconds = 600.0
    #: devices scored per model call (rows of one batch)
    batch: int = Field(5000, ge=1)


class ActionsSettings(_Section):
    """Remediation (M2M), customer guidance (H2M) and tickets (H2H)."""

    enabled: bool = True
    #: queues, escalation ladder and agent roster (see docs/tickets.md); optional
    routing: Path | None = Path("rules/service/routing.yaml")
    #: customer context by meta `customer` id; optional
    customers: Path | None = Path("rules/service/customers.yaml")
    #: a ticket resolves itself after the device stayed healthy this long
    quiet_period: Seconds = 600.0
    #: with a `guide`, how long the customer has before a person is asked to help
    guidance_timeout: Seconds = 1800.0
    #: how long a command may wait for an offline device before it expires
    command_ttl: Seconds = 3600.0
    #: copies of one command sent when the device does not answer
    max_sends: int = Field(3, ge=1, le=10)
    #: commands per device per hour (no command storms)
    budget_per_hour: int = Field(6, ge=1)
    #: allowed methods per meta `model` glob; a model matching no entry may receive any method
    allowlist: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    #: methods that need an agent's approval before they are sent
    approval_required: tuple[str, ...] = ()
    #: telemetry kept in a ticket around the alert's onset
    context_window: Seconds = 1800.0
    #: where an agent sees the device live (the ticket carries `{base}/api/v1/devices/{id}`)
    console_url: str = "http://127.0.0.1:8480"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Path("data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    mqtt: MqttSettings = MqttSettings()
    http: HttpSettings = HttpSettings()
    store: StoreSettings = StoreSettings()
    ingest: IngestSettings = IngestSettings()
    mappings: MappingsSettings = MappingsSettings()
    devices: DeviceSettings = DeviceSettings()
    rules: RulesSettings = RulesSettings()
    models: ModelsSettings = ModelsSettings()
    actions: ActionsSettings = ActionsSettings()
    webhook: WebhookSettings = WebhookSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives through init kwargs; the environment overrides it.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _windows_within_retention(self) -> Settings:
        # A rule window longer than the stored history would read what is no longer kept.
        if self.rules.max_window > self.store.retention:
            message = (
                "{window} is longer than store.retention ({retention}): rule windows would read"
                " history that is not kept; lower rules.max_window or raise store.retention"
            )
            context = {
                "window": format_duration(self.rules.max_window),
                "retention": format_duration(self.store.retention),
            }
            error = InitErrorDetails(
                type=PydanticCustomError("window_past_retention", message, context),
                loc=("rules", "max_window"),
                input=self.rules.max_window,
            )
            raise ValidationError.from_exception_data(type(self).__name__, [error])
        return self


def _plain(node: object, path: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> object:
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, value in node.items():
            line = node.lc.key(key)[0] + 1
            lines[(*path, str(key))] = line
            out[str(key)] = _plain(value, (*path, str(key)), lines)
        return out
    if isinstance(node, list):
        return [_plain(item, path, lines) for item in node]
    return node


def read_yaml_config(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """Return the file's settings and the line of every key."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problem = ConfigProblem("-", f"cannot read: {exc.strerror}", str(path))
        raise ConfigInvalid([problem]) from exc
    try:
        data = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = ConfigProblem("-", f"not valid YAML: {getattr(exc, 'problem', exc)}", where)
        raise ConfigInvalid([problem]) from exc
    if data is None:
        return {}, {}
    if not isinstance(data, CommentedMap):
        raise ConfigInvalid([ConfigProblem("-", "the file must be a mapping of keys", str(path))])
    lines: dict[tuple[str, ...], int] = {}
    plain = _plain(data, (), lines)
    assert isinstance(plain, dict)
    return plain, lines


def _source_of(loc: tuple[str, ...], path: Path | None, lines: dict[tuple[str, ...], int]) -> str:
    variable = ENV_PREFIX + "__".join(loc).upper()
    if any(key.upper() == variable for key in os.environ):
        return f"environment {variable}"
    for depth in range(len(loc), 0, -1):
        line = lines.get(loc[:depth])
        if line is not None and path is not None:
            return f"{path}:{line}"
    return str(path) if path else "defaults"


def load_settings(path: Path | None = None) -> Settings:
    """Return validated settings from `path` (optional) and the environment."""
    data, lines = read_yaml_config(path) if path else ({}, {})
    unknown = [
        ConfigProblem(
            name[len(ENV_PREFIX) :].split("__")[0].lower(), "unknown setting", f"environment {name}"
        )
        for name in os.environ
        if name.upper().startswith(ENV_PREFIX)
        and name.upper() not in _NOT_SETTINGS
        and name[len(ENV_PREFIX) :].split("__")[0].lower() not in Settings.model_fields
    ]
    if unknown:
        raise ConfigInvalid(unknown)
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                message = "unknown key"
            problems.append(ConfigProblem(".".join(loc), message, _source_of(loc, path, lines)))
        raise ConfigInvalid(problems) from exc


def effective_settings(settings: Settings) -> dict[str, Any]:
    """Return the settings as plain data with every secret masked."""
    return settings.model_dump(mode="json")
