"""Units (docs/devices.md, "Units"): conversions and spellings, a rule's `units` checked with
positions and applied by the engine, mappings that convert at ingest, and `frontline check`."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon.adapters.mapping_files import MappingFileSet, load_mappings, preset_names
from daemon.adapters.rule_files import RuleFileSet
from daemon.adapters.state_sqlite import SqliteStateStore
from daemon.adapters.store_sqlite import SqliteSeriesStore
from daemon.cli import cli
from daemon.config import RulesSettings
from daemon.core.alerts import AlertParams, AlertState, Phase, identity
from daemon.core.engine import (
    ConvertedContext,
    DeviceContext,
    UnitRefusal,
    Watch,
    evaluate_group,
    explain_rule,
    in_rule_units,
)
from daemon.core.ingress import Ingress
from daemon.core.messages import Meta, Telemetry
from daemon.core.rulefmt import Group, parse_rule_file
from daemon.core.twin import DeviceTwin, Twins
from daemon.core.units import Conversion, UnitError, check_unit, conversion, dimension
from daemon.core.windows import SeriesWindows
from daemon.metrics import Metrics
from daemon.rules import RuleService

S = 1000
T0 = 1_800_000_000_000
WATCH = Watch(True, T0 - 3600 * S, 0)


# -- conversions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target", "value", "expected"),
    [
        ("degF", "degC", 212.0, 100.0),
        ("degF", "degC", 32.0, 0.0),
        ("degF", "degC", -40.0, -40.0),
        ("degC", "degF", 37.0, 98.6),
        ("K", "degC", 0.0, -273.15),
        ("l/min", "m3/h", 100.0, 6.0),
        ("m³/h", "l/min", 6.0, 100.0),
        ("bar", "psi", 1.0, 14.5037738),
        ("kPa", "bar", 250.0, 2.5),
        ("kW", "W", 1.5, 1500.0),
        ("kWh", "Wh", 2.0, 2000.0),
        ("mV", "V", 3045.0, 3.045),
        ("%", "dimensionless", 50.0, 0.5),
        ("rpm", "Hz", 60.0, 1.0),  # a revolution is one turn, not 2π
        ("dBm", "dBW", 30.0, 0.0),
    ],
)
def test_conversion_is_affine_and_right(
    source: str, target: str, value: float, expected: float
) -> None:
    """Test that conversions (offset temperatures included) give the right values."""
    assert conversion(source, target)(value) == pytest.approx(expected, abs=1e-6)


def test_conversion_scale_and_offset() -> None:
    """Test the affine form itself, and that spellings of one unit convert as the identity."""
    assert conversion("degC", "degF") == Conversion(1.8, 32.0)
    assert conversion("l/min", "m3/h") == Conversion(0.06, 0.0)
    for spelling in ("°C", "℃", "° C", "deg C", "degree_Celsius"):
        assert conversion(spelling, "degC").identity, spelling
    for spelling in ("m3/h", "m**3/h", "m³/h", "m^3/h"):
        assert conversion(spelling, "m3/h").identity, spelling
    assert conversion("%RH", "%").identity
    assert conversion("L/min", "l/min").identity


@pytest.mark.parametrize(
    ("source", "target", "kind", "message"),
    [
        ("flubber", "degC", "unknown", "'flubber' is not a unit (e.g. degC, kW, l/min, bar, %)"),
        ("degC", "kW", "incompatible", "cannot convert degC (temperature) to kW (power)"),
        ("l/min", "bar", "incompatible", "cannot convert l/min (volume flow) to bar (pressure)"),
        ("C", "degC", "unknown", "'C' is ambiguous (C is the coulomb): write degC (or °C) for"
         " degrees Celsius"),
        ("F", "degF", "unknown", "'F' is ambiguous (F is the farad): write degF (or °F) for"
         " degrees Fahrenheit"),
        ("dBm", "mW", "nonlinear", "cannot convert dBm to mW: a logarithmic unit (dB, dBm)"
         " converts only to another of its kind (dBm to dBW)"),
        ("", "degC", "unknown", "'' is not a unit (e.g. degC, kW, l/min, bar, %)"),
        ("kw", "kW", "unknown", "'kw' is not a unit (e.g. degC, kW, l/min, bar, %)"),
    ],
)  # fmt: skip
def test_conversion_refusals_say_why(source: str, target: str, kind: str, message: str) -> None:
    """Test that unknown, ambiguous, incompatible and logarithmic units are refused clearly."""
    for _ in range(2):  # the second time from the cache: the same answer
        with pytest.raises(UnitError) as raised:
            conversion(source, target)
        assert str(raised.value) == message
        assert raised.value.kind == kind


def test_untrusted_unit_text_cannot_stall_the_parser() -> None:
    """Test that an exponent tower (pint would compute 9**9**9) is refused at once."""
    started = time.perf_counter()
    for text in ("m**9**9**9", "m^9^9^9", "m**(9**9)", "m**999", "(", "1/0", "m**"):
        with pytest.raises(UnitError, match="is not a unit"):
            check_unit(text)
    assert time.perf_counter() - started < 1.0
    check_unit("m**3/s**2")  # small exponents are fine


def test_dimensions_are_named() -> None:
    """Test the words messages use for dimensions."""
    assert [dimension(u) for u in ("kWh", "m3/h", "%", "hPa", "mA", "Hz", "rpm")] == [
        "energy", "volume flow", "ratio", "pressure", "current", "frequency", "frequency",
    ]  # fmt: skip


def test_every_unit_a_shipped_preset_declares_is_accepted() -> None:
    """Test that the presets' units all parse (a typo there would refuse every device)."""
    mappings, problems = load_mappings([], preset_names())
    assert problems == []
    units = {u for m in mappings for r in m.routes for u in r.units.values()}
    assert {"degC", "W", "kWh", "%", "dBm"} <= units
    for unit in units:
        check_unit(unit)


# -- rule files ----------------------------------------------------------------------------

RULE = """\
groups:
  - name: g
    interval: 10s
    rules:
      - alert: Hot
        expr: avg(temperature, 30s) > 45
        units: {temperature: degC}
"""


def _group(text: str = RULE) -> Group:
    groups, problems = parse_rule_file(text, "r.yaml")
    assert problems == []
    return groups[0]


def test_rule_units_are_parsed_and_part_of_the_fingerprint() -> None:
    """Test that `units` reaches the rule, and a changed unit is a changed rule (reload)."""
    rule = _group().rules[0]
    assert rule.units == {"temperature": "degC"}
    other = _group(RULE.replace("degC", "degF")).rules[0]
    assert other.fingerprint() != rule.fingerprint()


def test_rule_units_problems_have_positions() -> None:
    """Test each mistake in `units` with file:line:col: unit, name, metric not read, shape."""
    text = """\
groups:
  - name: g
    rules:
      - alert: Hot
        expr: avg(temperature, 30s) > 45 and last(flow) > 0
        impact: time_to(pressure, 1h, 0.8)
        units:
          temperature: flubber
          Flow Rate: l/min
          humidity: "%"
          flow: 3
          pressure: C
      - alert: Cold
        expr: last(temperature) < 5
        units: [degC]
"""
    _, problems = parse_rule_file(text, "r.yaml")
    assert [str(p) for p in problems] == [
        "r.yaml:8:24: [Hot] units.temperature: 'flubber' is not a unit (e.g. degC, kW, l/min,"
        " bar, %)",
        "r.yaml:9:11: [Hot] units: 'Flow Rate' is not a canonical metric name (write flow_rate)",
        "r.yaml:10:11: [Hot] units: the rule does not read humidity",
        "r.yaml:11:17: [Hot] units.flow must be a unit, e.g. degC",
        "r.yaml:12:21: [Hot] units.pressure: 'C' is ambiguous (C is the coulomb): write degC"
        " (or °C) for degrees Celsius",
        "r.yaml:15:16: [Cold] units must be a mapping of metric -> unit, e.g. {temperature: degC}",
    ]


# -- the engine ----------------------------------------------------------------------------


def _device(name: str, unit: str | None, value: float) -> tuple[DeviceTwin, SeriesWindows]:
    twin = DeviceTwin(name, T0 - 3600 * S, status="online", last_seen_ms=T0)
    if unit is not None:
        twin.units["temperature"] = unit
    twin.metrics["temperature"] = (T0, value)
    return twin, SeriesWindows({"temperature": 30})


def _context(twin: DeviceTwin, windows: SeriesWindows) -> DeviceContext:
    for offset in (20, 10, 0):
        windows.add(twin.id, "temperature", T0 - offset * S, twin.metrics["temperature"][1])
    return DeviceContext(twin, windows, T0, WATCH, 600.0)


def test_a_fahrenheit_device_is_evaluated_in_the_rules_celsius() -> None:
    """Test that 122 °F (50 °C) fires a `> 45` degC rule reporting 50, 104 °F (40 °C) does not,
    and a device that declared no unit is read as already in degC."""
    group = _group()
    contexts = [
        _context(*_device("fahrenheit", "degF", 122.0)),
        _context(*_device("cool", "°F", 104.0)),
        _context(*_device("celsius", "°C", 50.0)),
        _context(*_device("undeclared", None, 50.0)),
    ]
    refusals: list[UnitRefusal] = []
    _, transitions = evaluate_group(group, T0, contexts, {}, lambda _r: AlertParams(), refusals)
    fired = {t.device: t.value for t in transitions if t.to_phase is Phase.FIRING}
    assert fired == {
        "fahrenheit": pytest.approx(50.0),
        "celsius": 50.0,
        "undeclared": 50.0,
    }
    assert refusals == []
    ctx = in_rule_units(group.rules[0], contexts[0])
    assert isinstance(ctx, ConvertedContext)
    last = ctx.last("temperature")
    assert last is not None
    assert last[1] == pytest.approx(50.0)
    assert [v for _, v in ctx.window("temperature", 30)] == pytest.approx([50.0] * 3)


def test_a_rule_without_units_or_in_the_same_unit_reads_the_context_as_is() -> None:
    """Test the common case: no wrapper at all."""
    ctx = _context(*_device("celsius", "degC", 50.0))
    assert in_rule_units(_group().rules[0], ctx) is ctx
    plain = _group(RULE.replace("        units: {temperature: degC}\n", "")).rules[0]
    assert plain.units == {}
    assert in_rule_units(plain, _context(*_device("f", "degF", 1.0))).__class__ is DeviceContext


def test_an_incompatible_device_reads_unknown_and_explain_says_why() -> None:
    """Test that a device sending kW where degC is expected neither fires nor resolves, is
    collected as a refusal, and `explain` names the units."""
    group = _group()
    rule = group.rules[0]
    ctx = _context(*_device("meter", "kW", 1000.0))
    refusals: list[UnitRefusal] = []
    _, transitions = evaluate_group(group, T0, [ctx], {}, lambda _r: AlertParams(), refusals)
    assert transitions == []
    why = "temperature is in kW on this device; the rule expects degC"
    assert refusals == [UnitRefusal("g", "Hot", "meter", "temperature", why)]
    key = identity("meter", "Hot", {})
    firing = AlertState(key, "meter", "Hot", {}, Phase.FIRING, fired_at_ms=T0 - 60 * S)
    updates, transitions = evaluate_group(group, T0, [ctx], {key: firing}, lambda _r: AlertParams())
    assert transitions == []  # no resolve on data it cannot read
    assert updates.get(key, firing).phase is Phase.FIRING  # type: ignore[union-attr]
    verdict = explain_rule(group, rule, ctx, firing, AlertParams())
    assert verdict.condition is None
    assert verdict.reason == why
    assert why in verdict.details
    wrapped = in_rule_units(rule, ctx)
    assert wrapped.last("temperature") is None
    assert wrapped.window("temperature", 30) == []
    assert wrapped.absent_for("temperature") is None  # not "absent": unknown


def test_explain_says_what_was_converted_and_an_unknown_device_unit() -> None:
    """Test the conversion line of `explain`, and a device unit that is not a unit."""
    group = _group()
    rule = group.rules[0]
    verdict = explain_rule(group, rule, _context(*_device("f", "degF", 122.0)), None, AlertParams())
    assert verdict.condition is True
    assert "temperature converted from degF to degC" in verdict.details
    verdict = explain_rule(
        group, rule, _context(*_device("x", "flubber", 1.0)), None, AlertParams()
    )
    assert verdict.reason == (
        "temperature is in flubber on this device; the rule expects degC ('flubber' is not a"
        " unit (e.g. degC, kW, l/min, bar, %))"
    )


def test_the_runtime_logs_a_refusal_once_per_device_and_rule(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Test that RuleService logs the refusal, and not again on the next evaluation."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE)
    twins = Twins()
    twins.apply(Meta("meter", {"model": "m"}), T0)
    twins.get("meter").units["temperature"] = "kW"  # type: ignore[union-attr]

    async def scenario() -> None:
        series = SqliteSeriesStore(tmp_path / "series.db")
        state = SqliteStateStore(tmp_path / "state.db")
        await series.open()
        await state.open()
        service = RuleService(
            RulesSettings(paths=(rules,)), state, series, twins, SeriesWindows(),
            lambda: WATCH, Metrics(), 600.0, files=RuleFileSet((rules,)),
        )  # fmt: skip
        await service.start()
        for step in range(3):
            await service.evaluate(service.groups[0], T0 + step * 10 * S)
        await series.close()
        await state.close()

    with caplog.at_level(logging.WARNING, logger="daemon.rules"):
        asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records if "cannot read" in r.getMessage()]
    assert said == [
        "rule Hot (g) cannot read temperature of meter: temperature is in kW on this device;"
        " the rule expects degC; it reads unknown there"
    ]


# -- mappings ------------------------------------------------------------------------------

MAPPING = """\
mappings:
  - name: plant
    routes:
      - topic: plant/{device}/data
        units: {Temp: degF, flow: l/min, power: W}
        convert: {Temp: degC, flow: m3/h}
"""


def test_a_mapping_converts_at_ingest_and_the_twin_records_the_target_unit(
    tmp_path: Path,
) -> None:
    """Test `convert`: values arrive converted, and the twin says the unit they are now in."""
    path = tmp_path / "plant.yaml"
    path.write_text(MAPPING)
    found, problems = MappingFileSet([path]).load()
    assert problems == []
    ingress = Ingress(mappings=found)
    (message,) = ingress.classify("plant/p1/data", b'{"Temp": 212, "flow": 100, "power": 5}', T0)
    assert isinstance(message, Telemetry)
    assert message.samples[0].metrics == {
        "temp": pytest.approx(100.0), "flow": pytest.approx(6.0), "power": 5.0,
    }  # fmt: skip
    twins = Twins()
    twins.apply(message, T0)
    assert twins.get("p1").units == {"temp": "degC", "flow": "m3/h", "power": "W"}  # type: ignore[union-attr]


def test_mapping_convert_problems_have_positions(tmp_path: Path) -> None:
    """Test that `convert` needs a `units` entry and a unit the device's converts to."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "mappings:\n  - name: plant\n    routes:\n      - topic: plant/{device}/data\n"
        "        units: {temp: degF, power: W}\n"
        "        convert:\n          temp: kW\n          flow: m3/h\n          power: flubber\n"
    )
    _, problems = MappingFileSet([path]).load()
    assert [str(p) for p in problems] == [
        f"{path}:7:17: mappings.0.routes.0.convert.temp: convert: cannot convert degF"
        " (temperature) to kW (power)",
        f"{path}:8:11: mappings.0.routes.0.convert.flow: convert: flow needs the unit the device"
        " sends it in (units: {flow: ...})",
        f"{path}:9:18: mappings.0.routes.0.convert.power: convert: 'flubber' is not a unit"
        " (e.g. degC, kW, l/min, bar, %)",
    ]


# -- frontline check -----------------------------------------------------------------------


def test_check_says_which_mapping_units_a_rule_converts(tmp_path: Path) -> None:
    """Test the `converted from` line, and a unit that cannot convert failing the check."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULE)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "mappings:\n  - name: tasmota_f\n    routes:\n      - topic: t/{device}\n"
        "        units: {temperature: degF}\n"
    )
    result = CliRunner().invoke(cli, ["check", str(rules), str(mapping)])
    assert result.exit_code == 0, result.output
    assert f"{rules / 'r.yaml'}:5: Hot: temperature: converted from degF (mapping tasmota_f)" in (
        result.output.splitlines()
    )
    # The configured mappings, when only rule files are named.
    mapping.write_text(mapping.read_text().replace("degF", "kW"))
    env = {"FRONTLINE_MAPPINGS__PATHS": f'["{mapping}"]'}
    result = CliRunner().invoke(cli, ["check", str(rules)], env=env)
    assert result.exit_code == 1, result.output
    assert (
        f"{rules / 'r.yaml'}:5: Hot: temperature: in kW (mapping tasmota_f); the rule expects degC"
    ) in result.output.splitlines()
    assert "1 problem(s) with the rules' units" in result.output
