"""Pure tests of scenario files and fault flags, good and bad."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import simulators
from simulators.commands import Behaviour
from simulators.faults import FaultKind, FaultSpec, customer_impact_after, fix_for
from simulators.fleet import FleetOptions, plan_devices
from simulators.history import HistoryOptions
from simulators.models import UsageProfile
from simulators.scenario import (
    Scenario,
    ScenarioInvalid,
    load_scenario,
    parse_fault_flag,
    parse_seconds,
)

SCENARIOS = Path(simulators.__file__).parent / "scenarios"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(30, 30.0), (1.5, 1.5), ("45", 45.0), ("30s", 30.0), ("5m", 300.0), ("1.5m", 90.0),
     ("2h", 7200.0), ("250ms", 0.25), ("1m30s", 90.0), (" 10s ", 10.0)],
)  # fmt: skip
def test_parse_seconds(value: object, seconds: float) -> None:
    """Test the time forms accepted in flags and scenario files."""
    assert parse_seconds(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "soon", "5 minutes", "m5", "5y", True, None, [5]])
def test_parse_seconds_rejects_non_times(value: object) -> None:
    """Test that anything but a number or a number with a unit is rejected."""
    with pytest.raises(ValueError, match="expected a time such as 30s"):
        parse_seconds(value)


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        (
            "drift:sim-boiler-0001:temperature:start=30s:duration=5m:rate=2",
            FaultSpec("sim-boiler-0001", FaultKind.DRIFT, "temperature", 30.0, 300.0, {"rate": 2}),
        ),
        (
            "stuck:sim-freezer-0003:cabinet_temp",
            FaultSpec("sim-freezer-0003", FaultKind.STUCK, "cabinet_temp"),
        ),
        (
            "spike:sim-heat_pump-0002:cop:magnitude=1.5:probability=0.5:id=cop-spikes",
            FaultSpec(
                "sim-heat_pump-0002",
                FaultKind.SPIKE,
                "cop",
                params={"magnitude": 1.5, "probability": 0.5},
                id="cop-spikes",
            ),
        ),
        (
            "offline:sim-boiler-0004:start=15:duration=20s",
            FaultSpec("sim-boiler-0004", FaultKind.OFFLINE, None, 15.0, 20.0),
        ),
        ("dropout:dev.1", FaultSpec("dev.1", FaultKind.DROPOUT)),
        (
            "hardware:sim-heat_pump-0002:start=1m",
            FaultSpec("sim-heat_pump-0002", FaultKind.HARDWARE, start=60.0),
        ),
        (
            "drift:b:pressure:rate=-0.2:customer_fix_after=2m:customer_fix_from=notice",
            FaultSpec(
                "b",
                FaultKind.DRIFT,
                "pressure",
                params={"rate": -0.2},
                customer_fix_after=120.0,
                customer_fix_from="notice",
            ),
        ),
        (
            "drift:b:pressure:customer_fix_after=never:customer_impact_after=8m",
            FaultSpec("b", FaultKind.DRIFT, "pressure", customer_impact_after=480.0),
        ),
        (
            "decorrelate:sim-boiler-0001:start=2m:rate=1",
            FaultSpec("sim-boiler-0001", FaultKind.DECORRELATE, start=120.0, params={"rate": 1}),
        ),
        (
            "wear:sim-heat_pump-0002:life=2h:worn=0.9",
            FaultSpec("sim-heat_pump-0002", FaultKind.WEAR, params={"life": 7200, "worn": 0.9}),
        ),
        (
            "offline:b:customer_fix_after=1m:customer_fix_from=notice:customer_compliance=0.5",
            FaultSpec(
                "b",
                FaultKind.OFFLINE,
                customer_fix_after=60.0,
                customer_fix_from="notice",
                customer_compliance=0.5,
            ),
        ),
    ],
)
def test_parse_fault_flag(flag: str, expected: FaultSpec) -> None:
    """Test the flag syntax KIND:DEVICE[:METRIC][:KEY=VALUE]..."""
    assert parse_fault_flag(flag) == expected


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("", "expected KIND:DEVICE"),
        ("melt:sim-boiler-0001", "unknown kind 'melt' \\(known: drift, spike, stuck"),
        ("drift", "missing the device id"),
        ("drift::temperature", "missing the device id"),
        ("drift:sim-boiler-0001", "drift fault needs a metric"),
        ("offline:sim-boiler-0001:temperature", "too many fields for offline: 'temperature'"),
        ("drift:d:temperature:extra", "too many fields for drift: 'extra'"),
        ("drift:d:temperature:start=5s:rate", "'rate' comes after KEY=VALUE options"),
        ("drift:d:temperature:rate=fast", "rate must be a number, got 'fast'"),
        ("drift:d:temperature:rate=1: rate =2", "rate given twice"),
        ("drift:d:temperature:start=later", "expected a time such as 30s"),
        ("drift:d:temperature:duration=0s", "duration must be a time > 0"),
        ("drift:d:temperature:magnitude=3", "drift fault has no parameter 'magnitude'"),
        ("hardware:d:compressor", "too many fields for hardware: 'compressor'"),
        ("drift:d:pressure:customer_fix_from=phone", "customer_fix_from must be start or notice"),
        ("drift:d:pressure:customer_fix_from=notice", "'notice' needs customer_fix_after"),
        ("drift:d:pressure:customer_fix_after=soon", "expected a time such as 30s"),
        ("wear:d:life=soon", "expected a time such as 30s"),
        ("wear:d:vibration", "too many fields for wear: 'vibration'"),
        ("decorrelate:d:rate=-1", "decorrelate rate must be > 0"),
        ("offline:d:customer_compliance=2", "customer_compliance must be between 0 and 1"),
    ],
)
def test_parse_fault_flag_rejects_bad_input(flag: str, message: str) -> None:
    """Test that a bad flag raises ValueError quoting the flag and saying what is wrong."""
    with pytest.raises(ValueError, match=message) as caught:
        parse_fault_flag(flag)
    assert str(caught.value).startswith(f"bad fault {flag!r}: ")


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        ("demo", set(FaultKind) - {FaultKind.HARDWARE}),
        ("basic", set(FaultKind)),
        ("service", set(FaultKind)),
    ],
)
def test_shipped_scenarios_load(name: str, kinds: set[FaultKind]) -> None:
    """Test that the shipped scenarios are valid, with a fault of each kind they cover."""
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    assert scenario.description
    assert {spec.kind for spec in scenario.faults} == kinds


def test_demo_faults_all_start_within_40_seconds() -> None:
    """Test that the demo's faults all begin in its first 40 seconds, with time for the models'."""
    scenario = load_scenario(SCENARIOS / "demo.yaml")
    assert scenario.duration == 300.0
    assert all(spec.start <= 40 for spec in scenario.faults)


def write(tmp_path: Path, text: str) -> Path:
    """Write a scenario file and return its path."""
    path = tmp_path / "scenario.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_load_scenario_reads_both_fault_forms(tmp_path: Path) -> None:
    """Test a scenario with mapping and flag faults, defaults, and its fleet options."""
    path = write(
        tmp_path,
        """\
        devices: 3
        interval: 500ms
        seed: 9
        models: [freezer]
        id_prefix: lab
        faults:
          - device: lab-freezer-0002
            kind: drift
            metric: cabinet_temp
            start: 1m
            params: {rate: 3}
          - offline:lab-freezer-0003:start=10s:duration=5s
        """,
    )
    scenario = load_scenario(path)
    assert scenario == Scenario(
        devices=3,
        interval=0.5,
        seed=9,
        faults=(
            FaultSpec("lab-freezer-0002", FaultKind.DRIFT, "cabinet_temp", 60.0, None, {"rate": 3}),
            FaultSpec("lab-freezer-0003", FaultKind.OFFLINE, None, 10.0, 5.0),
        ),
        models=("freezer",),
        id_prefix="lab",
    )
    options = scenario.options(FleetOptions(port=1999, duration=30.0))
    assert (options.port, options.devices, options.interval, options.seed) == (1999, 3, 0.5, 9)
    assert (options.models, options.id_prefix, options.duration) == (("freezer",), "lab", 30.0)
    assert options.faults == scenario.faults


BAD_FILES = [
    ("devices: [1\n", 2, "expected ',' or ']'"),
    ("devices: 1\ndevices: 2\n", 2, "found duplicate key"),
    ("- 1\n", 1, "a scenario must be a YAML mapping"),
    ("", 1, "a scenario must be a YAML mapping"),
    ("devices: 2\ncolour: blue\n", 2, "colour: Extra inputs are not permitted"),
    ("devices: 0\n", 1, "devices: Input should be greater than or equal to 1"),
    ("devices: two\n", 1, "devices: Input should be a valid integer"),
    ("interval: fast\n", 1, "interval: expected a time such as 30s"),
    ("interval: 0\n", 1, "interval: Input should be greater than 0"),
    ("models: [boiler, toaster]\n", 1, "models.1: unknown device model 'toaster'"),
    (
        "faults:\n  - device: sim-boiler-0001\n    kind: melt\n    metric: temperature\n",
        3,
        "faults.0.kind: Input should be 'drift', 'spike', 'stuck', 'dropout', 'offline', "
        "'hardware', 'decorrelate' or 'wear'",
    ),
    (
        "faults:\n  - device: sim-boiler-0001\n    kind: drift\n",
        2,
        "faults.0: drift fault needs a metric",
    ),
    (
        "faults:\n  - device: sim-boiler-0001\n    kind: drift\n    metric: temperature\n"
        "    params: {rate: true}\n",
        5,
        "faults.0.params.rate: expected a number",
    ),
    ("faults:\n  - stuck:sim-boiler-0001\n", 2, "faults.0: stuck fault needs a metric"),
    ("faults:\n  - 42\n", 2, "faults.0: Input should be a valid dictionary"),
    (
        "devices: 2\nfaults:\n  - device: sim-boiler-0009\n    kind: dropout\n",
        3,
        "faults.0.device: no device 'sim-boiler-0009' in this fleet",
    ),
    (
        "faults:\n  - drift:sim-boiler-0001:burner_on\n",
        2,
        "boiler has no numeric metric 'burner_on'",
    ),
    (
        "faults:\n  - device: sim-boiler-0001\n    kind: stuck\n    metric: temperature\n"
        "    customer_fix_after: 2m\n",
        5,
        "faults.0.customer_fix_after: the customer cannot fix this stuck fault on boiler "
        "(it needs command reboot)",
    ),
    (
        "faults:\n  - device: sim-boiler-0001\n    kind: drift\n    metric: pressure\n"
        "    customer_fix_from: phone\n",
        5,
        "faults.0.customer_fix_from: Input should be 'start' or 'notice'",
    ),
    (
        "faults:\n  - device: sim-boiler-0001\n    kind: drift\n    metric: pressure\n"
        "    customer_fix_after: later\n",
        5,
        "faults.0.customer_fix_after: expected a time such as 30s",
    ),
    (
        "faults:\n  - device: sim-boiler-0001\n    kind: drift\n    metric: pressure\n"
        "    customer_fix_from: notice\n",
        2,
        "faults.0: customer_fix_from 'notice' needs customer_fix_after",
    ),
    (
        "devices: 3\nbehaviours:\n  sim-boiler-0001: {answer_delay: 5s}\n"
        "  sim-boiler-0004: {answer_delay: 5s}\n",
        4,
        "behaviours.sim-boiler-0004: no device 'sim-boiler-0004' in this fleet",
    ),
    (
        "behaviours:\n  sim-freezer-0003:\n    rejects: [reboot, reset_valve]\n",
        3,
        "behaviours.sim-freezer-0003.rejects: freezer has no command 'reset_valve' "
        "(its commands: defrost, reboot)",
    ),
    (
        "behaviours:\n  sim-boiler-0001:\n    drop_commands: 1.5\n",
        3,
        "behaviours.sim-boiler-0001.drop_commands: Input should be less than or equal to 1",
    ),
    (
        "behaviours:\n  sim-boiler-0001:\n    answer_delay: soon\n",
        3,
        "behaviours.sim-boiler-0001.answer_delay: expected a time such as 30s",
    ),
    (
        "behaviours:\n  sim-boiler-0001:\n    ignores: [reboot]\n",
        3,
        "behaviours.sim-boiler-0001.ignores: Extra inputs are not permitted",
    ),
    (
        "usage:\n  sim-boiler-0001: lazy\n",
        2,
        "usage.sim-boiler-0001: Input should be 'normal', 'unused', 'barely_used' or 'misused'",
    ),
    (
        "devices: 2\nusage:\n  sim-boiler-0001: unused\n  sim-freezer-0003: misused\n",
        4,
        "usage.sim-freezer-0003: no device 'sim-freezer-0003' in this fleet",
    ),
    ("profiles: {normal: -1, unused: 1}\n", 1, "profiles.normal: Input should be greater than"),
    ("profiles: {normal: 0}\n", 1, "profiles: at least one profile needs a weight > 0"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD_FILES)
def test_bad_scenario_reports_file_line_and_problem(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    """Test that a bad scenario raises ScenarioInvalid naming the file, line and problem."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioInvalid) as caught:
        load_scenario(path)
    assert caught.value.path == path
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{path}:{line}:")
    assert message in str(caught.value)


def test_load_scenario_reads_behaviours_usage_and_customer_keys(tmp_path: Path) -> None:
    """Test that the keys for behaviours, usage profiles and the customer's fix are read."""
    path = write(
        tmp_path,
        """\
        devices: 6
        faults:
          - device: sim-boiler-0004
            kind: drift
            metric: pressure
            params: {rate: -0.1}
            customer_fix_after: 2m
            customer_fix_from: notice
            customer_impact_after: 10m
          - device: sim-freezer-0006
            kind: drift
            metric: cabinet_temp
            customer_fix_after: never
          - hardware:sim-heat_pump-0002:start=30s
        behaviours:
          sim-boiler-0001: {answer_delay: 1m, drop_commands: 0.25}
          sim-freezer-0003:
            rejects: [reboot]
        usage:
          sim-boiler-0004: misused
        profiles: {normal: 4, unused: 1}
        """,
    )
    scenario = load_scenario(path)
    assert scenario.faults == (
        FaultSpec("sim-boiler-0004", FaultKind.DRIFT, "pressure", params={"rate": -0.1},
                  customer_fix_after=120.0, customer_fix_from="notice",
                  customer_impact_after=600.0),
        FaultSpec("sim-freezer-0006", FaultKind.DRIFT, "cabinet_temp"),
        FaultSpec("sim-heat_pump-0002", FaultKind.HARDWARE, start=30.0),
    )  # fmt: skip
    assert scenario.behaviours == {
        "sim-boiler-0001": Behaviour(answer_delay=60.0, drop_commands=0.25),
        "sim-freezer-0003": Behaviour(rejects=frozenset({"reboot"})),
    }
    assert scenario.usage == {"sim-boiler-0004": UsageProfile.MISUSED}
    assert scenario.profiles == {UsageProfile.NORMAL: 4.0, UsageProfile.UNUSED: 1.0}
    options = scenario.options(FleetOptions(port=1999))
    assert (options.behaviours, options.usage, options.profiles) == (
        scenario.behaviours, scenario.usage, scenario.profiles
    )  # fmt: skip
    plan = {i.device_id: i for i in plan_devices(options)}
    assert plan["sim-boiler-0001"].behaviour.answer_delay == 60.0
    assert plan["sim-boiler-0004"].usage is UsageProfile.MISUSED


def test_load_scenario_reads_history_compliance_and_the_learning_faults(tmp_path: Path) -> None:
    """Test the keys for the history backfill, the customers' compliance, and wear/decorrelate."""
    path = write(
        tmp_path,
        """\
        devices: 6
        compliance: 0.8
        history: {duration: 12h, step: 20s, wear_runs: 2, wear_life: 90m, seed: 4}
        faults:
          - {device: sim-heat_pump-0002, kind: wear, params: {life: 2h, worn: 0.5}}
          - {device: sim-boiler-0001, kind: decorrelate, start: 1m, params: {rate: 0.5}}
          - device: sim-freezer-0003
            kind: drift
            metric: cabinet_temp
            customer_fix_after: 1m
            customer_fix_from: notice
            customer_compliance: 0.25
        """,
    )
    scenario = load_scenario(path)
    assert scenario.compliance == 0.8
    assert scenario.history == HistoryOptions(
        duration=43200.0, step=20.0, wear_runs=2, wear_life=5400.0, seed=4
    )
    wear, relation, door = scenario.faults
    assert wear.effective_params == {"life": 7200.0, "worn": 0.5}
    assert relation.kind is FaultKind.DECORRELATE
    assert door.customer_compliance == 0.25
    options = scenario.options(FleetOptions(port=1999))
    assert (options.compliance, options.history) == (0.8, scenario.history)
    assert options.history_mode == "before"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("history: {step: 30s}\n", 1, "history.duration: Field required"),
        ("history:\n  duration: 1h\n  step: 2m\n", 3, "history.step: Input should be less"),
        ("history:\n  duration: 1h\n  wear_model: toaster\n", 3, "unknown device model"),
        ("history:\n  duration: 1h\n  wear_runs: 1\n", 3, "history.wear_runs: history.wear_model"),
        (
            "models: [boiler]\nhistory:\n  duration: 1h\n  wear_runs: 1\n  wear_model: freezer\n",
            5,
            "history.wear_model: the fleet has no freezer device",
        ),
        (
            "history:\n  duration: 3h\n  wear_runs: 5\n  wear_model: boiler\n",
            3,
            "but the history leaves 1 h before its clean tail (2 h)",
        ),
        ("compliance: 1.5\n", 1, "compliance: Input should be less than or equal to 1"),
    ],
)
def test_bad_history_reports_file_line_and_problem(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioInvalid) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"{path}:{line}:"), str(caught.value)
    assert message in str(caught.value)


def test_service_scenario_covers_the_service_loop() -> None:
    """Test that service.yaml has what scoring the service loop needs, all faults early."""
    scenario = load_scenario(SCENARIOS / "service.yaml")
    options = scenario.options()
    plan = {i.device_id: i for i in plan_devices(options)}
    assert scenario.devices >= 24
    assert scenario.duration is not None
    assert 8 * 60 <= scenario.duration <= 12 * 60
    fixes = {spec.id: fix_for(plan[spec.device].model, spec) for spec in scenario.faults}
    by_command = [s for s in scenario.faults if fixes[s.id].type == "command"]
    methods = {fixes[s.id].method for s in by_command}
    assert len(by_command) >= 4
    assert {"reboot", "reduce_power", "defrost", "reset_valve"} <= methods
    customer = [
        s
        for s in scenario.faults
        if fixes[s.id].type == "customer" and s.customer_fix_after is not None
    ]
    assert len(customer) >= 2
    assert {s.customer_fix_from for s in customer} == {"start", "notice"}
    assert len([s for s in scenario.faults if fixes[s.id].type == "none"]) >= 3
    offline = [s for s in scenario.faults if s.kind is FaultKind.OFFLINE]
    assert len(offline) >= 2
    # A device goes offline while a command-fixable fault is active: its command waits queued.
    assert any(
        o.device == s.device and s.start < o.start
        for o in offline for s in by_command
    )  # fmt: skip
    behaviours = scenario.behaviours.values()
    assert any(b.rejects for b in behaviours)
    assert any(b.answer_delay >= 30 for b in behaviours)
    usage = list(scenario.usage.values())
    assert usage.count(UsageProfile.UNUSED) >= 2
    assert usage.count(UsageProfile.MISUSED) >= 1
    for spec in scenario.faults:
        assert spec.start <= 5 * 60, spec.id
        impact = customer_impact_after(plan[spec.device].model, spec)
        if impact is not None:
            assert impact >= 5 * 60, spec.id  # a realistic margin to act before the customer
        if spec.customer_fix_after is not None and spec.customer_fix_from == "start":
            assert spec.start + spec.customer_fix_after < scenario.duration
    # For learned models: a broken relation, and a part that fails within the run after hours of
    # wear that the history shows; the history holds run-to-failure episodes to learn from.
    kinds = {spec.kind: spec for spec in scenario.faults}
    wear = kinds[FaultKind.WEAR]
    assert wear.remaining_life is not None
    assert wear.start + wear.remaining_life < scenario.duration - 60
    assert FaultKind.DECORRELATE in kinds
    assert scenario.history is not None
    assert scenario.history.wear_runs >= 5
    assert scenario.history.duration >= 12 * 3600


def test_bad_scenario_lists_every_problem(tmp_path: Path) -> None:
    """Test that all problems of a file are reported at once, each on its own line."""
    path = write(tmp_path, "devices: 0\ninterval: soon\nfaults:\n  - melt:x\n")
    with pytest.raises(ScenarioInvalid) as caught:
        load_scenario(path)
    lines = str(caught.value).splitlines()
    assert [line.split(": ")[0] for line in lines] == [f"{path}:1:1", f"{path}:2:1", f"{path}:4:5"]


def test_missing_scenario_file(tmp_path: Path) -> None:
    """Test that a missing file is a ScenarioInvalid, not an OSError."""
    with pytest.raises(ScenarioInvalid, match="cannot read scenario"):
        load_scenario(tmp_path / "nope.yaml")
