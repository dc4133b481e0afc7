"""Units of measurement: parse what devices and operators write, convert values between them.

Pure. Parsing and conversion are pint's; its registry costs about half a second to build, so it
is built on first use only (a fleet without units never pays it). docs/devices.md, "Units", says
what is accepted: pint's names and symbols (case matters: `kW`, `mV`), plus the spellings devices
send (`°C`, `℃`, `m3/h`, `%RH`). A bare `C` or `F` is refused: pint reads it as coulomb or farad.

>>> round(conversion("degF", "°C")(212.0), 9)
100.0
>>> conversion("l/min", "m3/h").scale
0.06
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pint import UnitRegistry

EXAMPLES = "e.g. degC, kW, l/min, bar, %"
#: spellings devices send -> what pint reads (see the module docstring)
SPELLINGS = {
    "℃": "degC", "°C": "degC", "° C": "degC", "deg C": "degC",
    "℉": "degF", "°F": "degF", "° F": "degF", "deg F": "degF", "°K": "K",
    "%RH": "%", "% RH": "%", "%rh": "%",
    # pint's rpm is 2π rad/min, so 60 rpm would be 6.28 Hz: a revolution is one turn here.
    "rpm": "1/min", "RPM": "1/min",
}  # fmt: skip
#: a cubed or squared length written without `**` (`m3`, `cm2`)
_POWER = re.compile(r"\b(m|cm|mm|dm|km|ft|in)([23])\b")
#: pint evaluates exponents: `m**9**9**9` would never finish (device text is untrusted)
_EXPONENT = re.compile(r"(\*\*|\^)\s*-?\d{1,2}(?![\d.])(?!\s*(\*\*|\^))")
_BARE_C_F = re.compile(r"(?<![A-Za-z_°])([CF])(?![A-Za-z_0-9])")
#: dimension names for messages, by a unit of each
_DIMENSIONS = {
    "temperature": "K", "power": "W", "energy": "J", "pressure": "Pa", "voltage": "V",
    "current": "A", "frequency": "Hz", "volume flow": "m**3/s", "volume": "m**3", "area": "m**2",
    "length": "m", "speed": "m/s", "mass": "kg", "time": "s", "mass flow": "kg/s",
    "resistance": "ohm", "illuminance": "lux", "concentration": "kg/m**3",
    "ratio": "dimensionless",
}  # fmt: skip
_MAX_CACHED = 4096


class UnitError(ValueError):
    """A unit that cannot be read, or two that do not convert; the message says why.

    `kind`: `unknown` (not a unit), `incompatible` (other dimensions) or `nonlinear` (a
    logarithmic unit such as dBm to a linear one).
    """

    def __init__(self, message: str, kind: str = "unknown") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Conversion:
    """An affine conversion: `value * scale + offset`."""

    scale: float
    offset: float = 0.0

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0

    def __call__(self, value: float) -> float:
        return value * self.scale + self.offset


_registry: UnitRegistry[Any] | None = None
_cache: dict[tuple[str, str], Conversion | UnitError] = {}
_units: dict[str, Any] = {}


def _ureg() -> UnitRegistry[Any]:
    global _registry  # noqa: PLW0603  built once, on first use
    if _registry is None:
        from pint import UnitRegistry  # about 0.5 s: paid only where units are used

        _registry = UnitRegistry()
    return _registry


def normalise(text: str) -> str:
    """Return `text` as pint reads it (`°C` -> `degC`, `m3/h` -> `m**3/h`).

    >>> normalise(" m3/h "), normalise("℃"), normalise("%RH")
    ('m**3/h', 'degC', '%')
    """
    text = text.strip()
    text = SPELLINGS.get(text, text)
    return _POWER.sub(r"\1**\2", text)


def parse_unit(text: str) -> Any:
    """Return pint's unit for `text`, or raise UnitError saying what to write instead."""
    found = _units.get(text)
    if found is not None:
        return found
    plain = normalise(text)
    bare = _BARE_C_F.search(plain)
    if bare is not None:
        celsius = bare.group(1) == "C"
        deg = (
            "degC (or °C) for degrees Celsius" if celsius else "degF (or °F) for degrees Fahrenheit"
        )
        name = "coulomb" if celsius else "farad"
        raise UnitError(f"{text!r} is ambiguous ({bare.group(1)} is the {name}): write {deg}")
    if not plain or _chained(plain):
        raise UnitError(f"{text!r} is not a unit ({EXAMPLES})")
    try:
        unit = _ureg().parse_units(plain)
    except Exception as exc:  # pint's parser raises many kinds (syntax, undefined, arithmetic)
        raise UnitError(f"{text!r} is not a unit ({EXAMPLES})") from exc
    if len(_units) < _MAX_CACHED:
        _units[text] = unit
    return unit


def _chained(text: str) -> bool:
    """Whether an exponent is anything but a small integer (`m**9**9`, `m**(2)`, `m**999`)."""
    rest = _EXPONENT.sub("", text)
    return "**" in rest or "^" in rest


def check_unit(text: str) -> None:
    """Raise UnitError unless `text` is a unit."""
    parse_unit(text)


def dimension(text: str) -> str:
    """The dimension of a unit in words (`kW` -> `power`), or pint's formula for a rare one."""
    unit = parse_unit(text)
    ureg = _ureg()
    for name, example in _DIMENSIONS.items():
        if unit.dimensionality == ureg.parse_units(example).dimensionality:
            return name
    return str(unit.dimensionality)


def conversion(from_unit: str, to_unit: str) -> Conversion:
    """Return how values in `from_unit` become values in `to_unit`, or raise UnitError.

    >>> conversion("degC", "degF")
    Conversion(scale=1.8, offset=32.0)
    """
    key = (from_unit, to_unit)
    known = _cache.get(key)
    if known is None:
        try:
            known = _conversion(from_unit, to_unit)
        except UnitError as exc:
            known = exc
        if len(_cache) < _MAX_CACHED:
            _cache[key] = known
    if isinstance(known, UnitError):
        raise UnitError(str(known), known.kind)  # a new one: no traceback piles up on it
    return known


def _conversion(from_unit: str, to_unit: str) -> Conversion:
    source, target = parse_unit(from_unit), parse_unit(to_unit)
    if source == target:
        return Conversion(1.0)
    if source.dimensionality != target.dimensionality:
        raise UnitError(
            f"cannot convert {from_unit} ({dimension(from_unit)}) to {to_unit}"
            f" ({dimension(to_unit)})",
            "incompatible",
        )
    quantity = _ureg().Quantity

    def convert(value: float) -> float:
        return float(quantity(value, source).to(target).magnitude)

    try:
        offset = convert(0.0)
        scale = (convert(1000.0) - offset) / 1000.0
        one = convert(1.0)
    except Exception as exc:  # pint refuses some pairs (a logarithmic unit at 0, overflow)
        raise _nonlinear(from_unit, to_unit) from exc
    if not all(map(math.isfinite, (offset, scale, one))) or not math.isclose(
        one, scale + offset, rel_tol=1e-9, abs_tol=1e-12 * max(1.0, abs(offset), abs(scale))
    ):
        raise _nonlinear(from_unit, to_unit)
    return Conversion(_snapped(scale), _snapped(offset))


def _snapped(value: float) -> float:
    """`value` without pint's float noise where it is one (0.06000000000000001 -> 0.06)."""
    short = float(f"{value:.12g}") + 0.0  # (+ 0.0: no -0.0)
    return short if math.isclose(short, value, rel_tol=1e-13, abs_tol=1e-300) else value


def _nonlinear(from_unit: str, to_unit: str) -> UnitError:
    return UnitError(
        f"cannot convert {from_unit} to {to_unit}: a logarithmic unit (dB, dBm) converts only"
        " to another of its kind (dBm to dBW)",
        "nonlinear",
    )
