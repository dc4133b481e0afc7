"""`frontline init` writes a starter layout; `frontline run` and `check` work without one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.resources.abc import Traversable
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from daemon.adapters.mapping_files import MappingFileSet, load_mappings
from daemon.adapters.mosquitto import MosquittoProcess
from daemon.cli import cli
from daemon.cli import init as init_module
from daemon.config import Settings, load_settings
from daemon.ruletest import run_test_files
from simulators.burst import publish_burst
from tests.conftest import DaemonProcess, wait_until

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = [
    "frontline.yaml",
    "rules/starter.yaml",
    "rules/service/routing.yaml",
    "rules/service/customers.yaml",
]


@pytest.fixture(autouse=True)
def _no_settings_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FRONTLINE_"):
            monkeypatch.delenv(name)


def _frontline(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`frontline ARGS` as a user runs it, in `cwd`, with no FRONTLINE_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRONTLINE_")}
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _init(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["init", *args])
    return result.exit_code, result.output


def test_init_writes_a_layout_that_check_accepts(tmp_path: Path) -> None:
    """Test that init writes the four commented files, and check run in the folder passes."""
    site = tmp_path / "site"
    code, output = _init(str(site))
    assert code == 0, output
    assert [f"wrote {site / name}" for name in LAYOUT] == output.splitlines()[: len(LAYOUT)]
    assert f"cd {site}" in output
    assert "frontline --config frontline.yaml check" in output
    for name in LAYOUT:
        assert (site / name).read_text().startswith("# "), f"{name} opens with a comment"
    result = _frontline(site, "--config", str(site / "frontline.yaml"), "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "OK: 1 file(s), 1 group(s), 3 rule(s)",
        "OK: actions.routing rules/service/routing.yaml: 2 queue rule(s), 1 escalation step(s),"
        " 0 agent(s)",
        "OK: actions.customers rules/service/customers.yaml: 0 customer(s)",
    ]


def test_the_starter_config_holds_the_defaults(tmp_path: Path) -> None:
    """Test that frontline.yaml sets every value it shows to its default, paths left unset."""
    assert _init(str(tmp_path))[0] == 0
    settings = load_settings(tmp_path / "frontline.yaml")
    assert settings.model_dump() == Settings().model_dump()
    # Paths stay defaults (commented out), so that a missing `models/` is not an error.
    for section in (settings.rules, settings.models):
        assert "paths" not in section.model_fields_set
    assert not {"routing", "customers"} & settings.actions.model_fields_set


def test_init_writes_into_the_working_directory_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that without DIR the layout lands here, and the next steps need no `cd`."""
    monkeypatch.chdir(tmp_path)
    code, output = _init()
    assert code == 0, output
    assert all((tmp_path / name).is_file() for name in LAYOUT)
    assert "cd " not in output


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    """Test that existing files are named, nothing is written, and --force overwrites."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "starter.yaml").write_text("mine\n")
    code, output = _init(str(tmp_path))
    assert code == 1
    assert f"not overwriting {tmp_path / 'rules' / 'starter.yaml'} (use --force)" in output
    assert not (tmp_path / "frontline.yaml").exists()
    assert (tmp_path / "rules" / "starter.yaml").read_text() == "mine\n"

    code, output = _init(str(tmp_path), "--force")
    assert code == 0, output
    shipped = ROOT / "daemon" / "starter" / "rules" / "starter.yaml"
    assert (tmp_path / "rules" / "starter.yaml").read_text() == shipped.read_text()


@pytest.fixture
def presets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package whose presets folder holds one preset, `demo` (the real ones are not needed)."""
    folder = tmp_path / "package" / "presets"
    folder.mkdir(parents=True)
    (folder / "demo.yaml").write_text("# a preset\n")
    (folder / "notes.txt").write_text("not a preset\n")
    real = init_module._package_dir

    def package_dir(name: str) -> Traversable:
        return folder if name == "presets" else real(name)

    monkeypatch.setattr(init_module, "_package_dir", package_dir)
    return folder


def test_init_copies_the_presets_named(tmp_path: Path, presets: Path) -> None:
    """Test that --preset NAME copies the shipped preset to mappings/NAME.yaml."""
    site = tmp_path / "site"
    code, output = _init(str(site), "--preset", "demo", "--preset", "demo")
    assert code == 0, output
    assert (site / "mappings" / "demo.yaml").read_text() == "# a preset\n"
    assert output.count("mappings") == 1


def test_an_unknown_preset_lists_the_available_ones(tmp_path: Path, presets: Path) -> None:
    """Test that an unknown preset name is an error naming the shipped presets; nothing written."""
    code, output = _init(str(tmp_path), "--preset", "demo", "--preset", "zigbee")
    assert code == 1
    assert "unknown preset zigbee (available: demo)" in output
    assert not (tmp_path / "frontline.yaml").exists()


SHIPPED = sorted(p.stem for p in (ROOT / "daemon" / "presets").glob("*.yaml"))


def test_every_shipped_preset_is_offered() -> None:
    """Test that init offers exactly the presets in daemon/presets/."""
    assert "zigbee2mqtt" in SHIPPED
    assert init_module.available_presets() == SHIPPED


def test_the_shipped_presets_are_copied_and_load(tmp_path: Path) -> None:
    """Test that each copy equals the shipped preset, loads as the daemon reads it, and check
    passes with it."""
    code, output = _init(str(tmp_path), *(f"--preset={name}" for name in SHIPPED))
    assert code == 0, output
    for name in SHIPPED:
        copy = tmp_path / "mappings" / f"{name}.yaml"
        assert copy.read_text() == (ROOT / "daemon" / "presets" / f"{name}.yaml").read_text()
    mappings, problems = load_mappings([tmp_path / "mappings"])
    assert problems == []
    assert len(mappings) >= len(SHIPPED)
    result = _frontline(tmp_path, "--config", "frontline.yaml", "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mappings.paths" not in result.stderr


STARTER_TESTS = """\
rule_files: [site/rules/starter.yaml]
tests:
  - name: a device that reports and stays within its limit raises nothing
    interval: 1m
    devices:
      ok:
        meta: {model: any}
        series: {temperature: "20+0.1x40"}
    alerts:
      - {at: 40m, firing: [], pending: []}
  - name: too hot for 2 minutes fires, against the device's own limit
    interval: 1m
    devices:
      hot:
        meta: {model: any, max_temp: 60}
        series: {temperature: "50x9 70x20"}
      warm:
        meta: {model: any}
        series: {temperature: "50x9 70x20"}
    alerts:
      - at: 13m
        pending: [{alert: TemperatureHigh, device: hot}]
        firing: []
      - at: 15m
        firing:
          - alert: TemperatureHigh
            device: hot
            annotations: {summary: "hot at 70.0 (limit 60)"}
  - name: silence from a connected device is stale telemetry, offline is DeviceOffline
    interval: 1m
    devices:
      hung:
        meta: {model: any}
        status: {"0s": online}
        series: {temperature: "20x5", humidity: "40x30"}
      gone:
        meta: {model: any}
        status: {"0s": online, "6m": offline}
        series: {temperature: "20x5"}
    alerts:
      - at: 19m
        firing:
          - {alert: DeviceOffline, device: gone}
      - at: 21m
        firing:
          - {alert: TelemetryStale, device: hung}
          - {alert: DeviceOffline, device: gone}
"""


def test_the_starter_rules_do_what_their_comments_say(tmp_path: Path) -> None:
    """Test the three starter rules through the rule engine (`frontline test`)."""
    assert _init(str(tmp_path / "site"))[0] == 0
    (tmp_path / "starter_test.yaml").write_text(STARTER_TESTS)
    results = run_test_files([tmp_path / "starter_test.yaml"])
    assert len(results) == 3
    assert [(r.name, r.failures) for r in results if not r.ok] == []


def test_check_in_an_empty_directory_warns_and_passes(tmp_path: Path) -> None:
    """Test that the absent default paths are warnings naming `frontline init`, exit 0."""
    result = _frontline(tmp_path, "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    warnings = result.stderr.splitlines()
    assert warnings[:3] == [
        f"warning: rules.paths: rules (in {tmp_path}) not found: no rules are evaluated"
        " (`frontline init` writes a starter layout)",
        f"warning: models.paths: models (in {tmp_path}) not found: no learned models",
        f"warning: mappings.paths: mappings (in {tmp_path}) not found: devices are read in the"
        " native topic layout and the mappings.presets only",
    ]
    assert "warning: actions.routing: rules/service/routing.yaml" in warnings[3]
    assert "warning: actions.customers: rules/service/customers.yaml" in warnings[4]


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("FRONTLINE_RULES__PATHS", '["rules"]', "rules:1:1: cannot read"),
        ("FRONTLINE_MODELS__PATHS", '["models"]', "models:1:1: -: cannot read"),
        ("FRONTLINE_ACTIONS__ROUTING", "rules/service/routing.yaml", "file not found"),
    ],
)
def test_a_path_set_explicitly_must_exist(
    tmp_path: Path, variable: str, value: str, problem: str
) -> None:
    """Test that a path the operator set is an error when missing, even the default's value."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRONTLINE_")}
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "check"],
        cwd=tmp_path,
        env={**env, variable: value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert problem in result.stdout


def test_a_mapping_path_set_explicitly_must_exist(tmp_path: Path) -> None:
    """Test that a missing default mapping path holds none, and a path the operator set fails."""
    mappings, problems = MappingFileSet([tmp_path / "nope"]).load()
    assert (mappings.mappings, problems) == ((), [])
    _, problems = MappingFileSet([tmp_path / "nope"], require=True).load()
    assert [p.message for p in problems] == ["no such file or directory"]


def test_backtest_and_train_in_an_empty_directory(tmp_path: Path) -> None:
    """Test that commands reading the default rules or models see none instead of failing."""
    result = _frontline(tmp_path, "backtest", "--since", "1h")
    assert result.returncode == 0, result.stderr
    assert "0 group evaluations" in result.stdout
    result = _frontline(tmp_path, "train")
    assert result.returncode == 1
    assert "no model specs to train" in result.stderr


@pytest.fixture
def bare(broker: MosquittoProcess, tmp_path: Path) -> Iterator[DaemonProcess]:
    """A daemon in an empty working directory, with nothing but the broker and ports set."""
    empty = tmp_path / "empty"
    empty.mkdir()
    daemon = DaemonProcess(broker, tmp_path / "data")
    daemon.cwd = empty
    yield daemon
    if daemon.running:
        daemon.kill()


@pytest.mark.integration
def test_run_in_an_empty_directory_starts_and_ingests(
    broker: MosquittoProcess, bare: DaemonProcess
) -> None:
    """Test that `frontline run` with no rules, models or service files runs and stores."""
    assert bare.cwd is not None
    bare.start()
    status, body = bare.get("/readyz")
    assert status == 200
    warnings = json.loads(body)["warnings"]
    assert warnings["rules.paths"] == (
        f"rules.paths: rules (in {bare.cwd}) not found: no rules are evaluated"
        " (`frontline init` writes a starter layout)"
    )
    assert set(warnings) == {
        "rules.paths",
        "models.paths",
        "actions.routing",
        "actions.customers",
        "mappings.paths",
    }
    log = bare.log.read_text()
    assert log.count("rules.paths: rules") == 1
    assert "rules: 0 groups, 0 rules" in log

    ts = int(time.time() * 1000)
    message = orjson.dumps({"ts": ts, "values": {"temperature": 21.5}})
    publish_burst(broker.port, [("devices/dev-1/telemetry", message)])
    wait_until(
        lambda: bare.cli_json("query", "dev-1", "temperature") == [[ts, 21.5]],
        what="the reading to be stored",
    )
    assert bare.stop() == 0
    assert list(bare.cwd.iterdir()) == []


@pytest.mark.integration
def test_rules_written_into_a_running_daemon_are_picked_up(
    broker: MosquittoProcess, bare: DaemonProcess
) -> None:
    """Test that `frontline init` next to a running daemon loads its rules; the warning goes."""
    assert bare.cwd is not None
    bare.env["FRONTLINE_RULES__WATCH_INTERVAL"] = "200ms"
    bare.start()
    assert _init(str(bare.cwd))[0] == 0

    def warnings() -> dict[str, str]:
        return dict(json.loads(bare.get("/readyz")[1])["warnings"])

    wait_until(
        lambda: "rules reloaded (rule files changed): 1 groups, 3 rules" in bare.log.read_text(),
        what="the rules to load",
    )
    # Routing and customers are read at start-up: they count as absent until a restart.
    assert set(warnings()) == {
        "models.paths",
        "actions.routing",
        "actions.customers",
        "mappings.paths",
    }
