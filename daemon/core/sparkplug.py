"""Sparkplug B: an edge node's births, data and deaths as Frontline's messages.

Pure: the receive time is an argument, and the decoder's state (per edge node: the birth's
bdSeq, the last seq, the alias tables, which devices are online) changes only in `decode`, which
must see one node's messages in the order they arrived. docs/devices.md, "Sparkplug B", says what
becomes of each message and what is dropped.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from daemon.core import sparkplug_b_pb2 as pb
from daemon.core.mappings import TemplateError, device_id
from daemon.core.messages import Message, Origin, Status, Telemetry, rejection
from daemon.core.payloads import (
    DEFAULT_LIMITS,
    FieldNotes,
    Limits,
    nothing_usable,
    parse_timestamp,
    sample_from_values,
)
from daemon.errors import PayloadRejected

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
#: at most one rebirth request per edge node in this long
REBIRTH_INTERVAL_MS = 10_000
#: edge nodes remembered (and devices per node); past it the least recently born is forgotten
#: and, if it speaks again, asked for a rebirth
MAX_NODES = 100_000
MAX_DEVICES = 10_000
COUNTERS = ("seq_gap", "bdseq_mismatch", "unknown_alias", "rebirth_requested", "data_before_birth")
_NODE_KINDS = {"NBIRTH", "NDATA", "NDEATH"}
_DEVICE_KINDS = {"DBIRTH", "DDATA", "DDEATH"}
_SIGNED_BITS: dict[int, int] = {pb.Int8: 8, pb.Int16: 16, pb.Int32: 32, pb.Int64: 64}
#: Sparkplug 3.0 arrays: little-endian values packed in bytes_value (struct formats)
_ARRAYS: dict[int, str] = {
    pb.Int8Array: "<b",
    pb.Int16Array: "<h",
    pb.Int32Array: "<i",
    pb.Int64Array: "<q",
    pb.UInt8Array: "<B",
    pb.UInt16Array: "<H",
    pb.UInt32Array: "<I",
    pb.UInt64Array: "<Q",
    pb.FloatArray: "<f",
    pb.DoubleArray: "<d",
    pb.DateTimeArray: "<q",
}


@dataclass(slots=True)
class _Declared:
    """What a birth declared: alias -> metric name, and each name's datatype."""

    names: dict[int, str] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Device:
    declared: _Declared = field(default_factory=_Declared)
    born: bool = False
    online: bool = False


@dataclass(slots=True)
class _Node:
    declared: _Declared = field(default_factory=_Declared)
    born: bool = False
    bdseq: int | None = None
    seq: int | None = None
    requested_ms: int | None = None
    devices: dict[str, _Device] = field(default_factory=dict)


class SparkplugDecoder:
    """Decodes Sparkplug B messages (protobuf) and keeps each edge node's session state.

    Device ids are `{group}.{node}` for the edge node itself and `{group}.{node}.{device}` for
    its devices, characters outside `[A-Za-z0-9_.:-]` replaced by `_`.

    >>> decoder = SparkplugDecoder()
    >>> decoder.filters()
    ['spBv1.0/#']
    >>> decoder.decode("spBv1.0/STATE/scada-1", b"ONLINE", 0)
    []
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS, namespace: str = NAMESPACE) -> None:
        self.limits = limits
        self.namespace = namespace
        #: protocol events by name (COUNTERS); dropped fields are also in each message's notes
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._requests: list[tuple[str, bytes]] = []

    def filters(self) -> list[str]:
        """The MQTT subscriptions that bring every Sparkplug B message of the namespace."""
        return [f"{self.namespace}/#"]

    def take_requests(self) -> list[tuple[str, bytes]]:
        """Return (and forget) the messages to publish: NCMD rebirth requests, QoS 0."""
        requests, self._requests = self._requests, []
        return requests

    def decode(self, topic: str, payload: bytes, received_ms: int) -> list[Message]:
        """Return what one Sparkplug B message means; none for STATE and commands."""
        parts = topic.split("/")
        device: str | None = None
        try:
            kind = self._kind(parts, topic)
            if kind is None:
                return []
            device = _device_id(parts[1], parts[3], parts[4] if len(parts) == 5 else None)
            message = self._parse(payload)
        except PayloadRejected as rejected:
            return [rejection(topic, device, rejected, payload)]
        group, node_name = parts[1], parts[3]
        device_name = parts[4] if len(parts) == 5 else None
        call = _Call(topic, payload, received_ms, device, _origin(group, node_name, device_name))
        key = (group, node_name)
        if kind == "NBIRTH":
            return self._node_birth(call, key, message)
        if kind == "NDEATH":
            return self._node_death(call, key, message)
        node = self._node(key)
        self._check_seq(call, key, node, message)
        if device_name is not None:
            return self._device(call, key, node, device_name, kind, message)
        if not node.born:
            self._before_birth(call, key, node)
        return self._telemetry(call, key, node, node.declared, message, birth=False)

    def _kind(self, parts: list[str], topic: str) -> str | None:
        """The message type of a topic (NBIRTH...), None for one that is not ours to decode."""
        if parts[0] == "STATE" or (parts[0] == self.namespace and parts[1:2] == ["STATE"]):
            return None  # a host application's state (Sparkplug 2.2 and 3.0 topics)
        kind = parts[2] if len(parts) > 2 else ""
        if kind in ("NCMD", "DCMD") and parts[0] == self.namespace:
            return None  # commands to the nodes: ours, or another host's
        width = 4 if kind in _NODE_KINDS else 5 if kind in _DEVICE_KINDS else 0
        if len(parts) != width or parts[0] != self.namespace or not all(parts):
            raise PayloadRejected("bad_topic", f"not a Sparkplug B topic: {topic[:200]!r}")
        return kind

    def _parse(self, payload: bytes) -> pb.Payload:
        if len(payload) > self.limits.max_payload_bytes:
            detail = f"{len(payload)} bytes > limit {self.limits.max_payload_bytes}"
            raise PayloadRejected("too_large", detail)
        try:
            return pb.Payload.FromString(payload)
        except DecodeError as exc:
            raise PayloadRejected("bad_sparkplug", f"not a Sparkplug B payload: {exc}") from exc

    # -- node messages ----------------------------------------------------------------------

    def _node_birth(self, call: _Call, key: tuple[str, str], message: pb.Payload) -> list[Message]:
        node = self._node(key)
        self._nodes[key] = self._nodes.pop(key)  # most recently born last: forgotten last
        node.born = True
        node.bdseq = _bdseq(message)
        node.seq = message.seq if message.HasField("seq") else None
        node.declared = _declare(message)
        for device in node.devices.values():  # their aliases belonged to the old session
            device.born = False
            device.declared = _Declared()
        out: list[Message] = [Status(call.device, "online", call.origin)]
        return out + self._telemetry(call, key, node, node.declared, message, birth=True)

    def _node_death(self, call: _Call, key: tuple[str, str], message: pb.Payload) -> list[Message]:
        node = self._nodes.get(key)
        bdseq = _bdseq(message)
        if node is not None and None not in (node.bdseq, bdseq) and bdseq != node.bdseq:
            self.counters["bdseq_mismatch"] += 1  # the will of an older session: stale
            return []
        out: list[Message] = [Status(call.device, "offline", call.origin)]
        if node is None:
            return out
        node.born = False
        node.seq = None
        node.declared = _Declared()
        group, node_name = key
        for name, device in node.devices.items():
            if device.online:
                origin = _origin(group, node_name, name)
                out.append(Status(_device_id(group, node_name, name), "offline", origin))
            device.born = device.online = False
            device.declared = _Declared()
        return out

    # -- device messages --------------------------------------------------------------------

    def _device(
        self,
        call: _Call,
        key: tuple[str, str],
        node: _Node,
        name: str,
        kind: str,
        message: pb.Payload,
    ) -> list[Message]:
        device = node.devices.get(name)
        if device is None:
            if len(node.devices) >= MAX_DEVICES:
                del node.devices[next(iter(node.devices))]
            device = node.devices[name] = _Device()
        if kind == "DDEATH":
            device.born = device.online = False
            device.declared = _Declared()
            return [Status(call.device, "offline", call.origin)]
        if kind == "DBIRTH":
            if not node.born:
                self._before_birth(call, key, node)  # a device of a node whose NBIRTH we missed
            device.born = device.online = True
            device.declared = _declare(message)
            out: list[Message] = [Status(call.device, "online", call.origin)]
            return out + self._telemetry(call, key, node, device.declared, message, birth=True)
        if not (node.born and device.born):
            self._before_birth(call, key, node)
        return self._telemetry(call, key, node, device.declared, message, birth=False)

    # -- shared -----------------------------------------------------------------------------

    def _node(self, key: tuple[str, str]) -> _Node:
        node = self._nodes.get(key)
        if node is None:
            if len(self._nodes) >= MAX_NODES:
                del self._nodes[next(iter(self._nodes))]
            node = self._nodes[key] = _Node()
        return node

    def _check_seq(
        self, call: _Call, key: tuple[str, str], node: _Node, message: pb.Payload
    ) -> None:
        """Count a gap in the node's 0..255 sequence (and ask for a rebirth)."""
        if not message.HasField("seq"):
            return
        last, node.seq = node.seq, message.seq
        if last is None or message.seq == last:  # no baseline yet, or a redelivery
            return
        if message.seq != (last + 1) % 256:
            self.counters["seq_gap"] += 1
            self._request_rebirth(call, key, node)

    def _before_birth(self, call: _Call, key: tuple[str, str], node: _Node) -> None:
        self.counters["data_before_birth"] += 1
        self._request_rebirth(call, key, node)

    def _request_rebirth(self, call: _Call, key: tuple[str, str], node: _Node) -> None:
        """Queue an NCMD `Node Control/Rebirth` = true, at most one per node per interval."""
        since = None if node.requested_ms is None else call.received_ms - node.requested_ms
        if since is not None and 0 <= since < REBIRTH_INTERVAL_MS:
            return
        node.requested_ms = call.received_ms
        self.counters["rebirth_requested"] += 1
        metric = pb.Payload.Metric(name=REBIRTH, datatype=pb.Boolean, boolean_value=True)
        body = pb.Payload(timestamp=call.received_ms, metrics=[metric]).SerializeToString()
        self._requests.append((f"{self.namespace}/{key[0]}/NCMD/{key[1]}", body))

    def _telemetry(
        self,
        call: _Call,
        key: tuple[str, str],
        node: _Node,
        declared: _Declared,
        message: pb.Payload,
        birth: bool,
    ) -> list[Message]:
        """The message's metrics as samples, one per timestamp, or the rejection."""
        notes = FieldNotes()
        by_ts: dict[int, dict[str, object]] = {}
        default_ts = message.timestamp if message.HasField("timestamp") else call.received_ms
        node_level = call.origin.segment("device") is None
        unknown = False
        for metric in message.metrics:
            if metric.name:
                name = _name(metric)
            elif metric.HasField("alias") and not birth:
                found = declared.names.get(metric.alias)
                if found is None:
                    notes.drop(f"alias {metric.alias}", "unknown_alias")
                    self.counters["unknown_alias"] += 1
                    unknown = True
                    continue
                name = found
            else:
                notes.drop("(no name)", "bad_name")
                continue
            if node_level and (name == "bdSeq" or name.startswith("Node Control/")):
                continue  # the protocol's own metrics, read above, not telemetry
            raw_ts = metric.timestamp if metric.HasField("timestamp") else default_ts
            try:
                ts = parse_timestamp(raw_ts, call.received_ms, self.limits)
            except PayloadRejected:
                notes.drop(name, "bad_ts")
                continue
            datatype = metric.datatype if metric.HasField("datatype") else declared.types.get(name)
            by_ts.setdefault(ts, {})[name] = _value(metric, datatype or pb.Unknown)
        if unknown:
            self._request_rebirth(call, key, node)
        try:
            samples = [sample_from_values(v, ts, notes, self.limits) for ts, v in by_ts.items()]
        except PayloadRejected as rejected:
            return [rejection(call.topic, call.device, rejected, call.payload)]
        samples = [s for s in samples if s.metrics or s.attributes]
        if samples:
            return [Telemetry(call.device, samples, notes or None, call.origin)]
        if birth and not notes.dropped:
            return []  # a birth that declares no metrics of its own
        return [rejection(call.topic, call.device, nothing_usable(notes), call.payload)]


@dataclass(frozen=True, slots=True)
class _Call:
    """The message being decoded: where it came from and when."""

    topic: str
    payload: bytes
    received_ms: int
    device: str
    origin: Origin


def command_message(
    origin: Origin, method: str, params: Mapping[str, object], now_ms: int
) -> tuple[str, bytes]:
    """A remediation command as a Sparkplug write: DCMD to a device, NCMD to an edge node.

    Each parameter is written as a metric of its name; a command without parameters writes its
    method's name as a Boolean `true` (`Device Control/Reboot`). docs/devices.md, "Sparkplug B".
    """
    group, node, device = (origin.segment(k) for k in ("group", "node", "device"))
    if group is None or node is None:
        raise TemplateError(f"not a Sparkplug device: {origin}")
    kind = "NCMD" if device is None else "DCMD"
    topic = f"{NAMESPACE}/{group}/{kind}/{node}" + ("" if device is None else f"/{device}")
    writes = dict(params) or {method: True}
    message = pb.Payload(timestamp=now_ms)
    for name, value in writes.items():
        metric = message.metrics.add(name=name, timestamp=now_ms)
        if isinstance(value, bool):
            metric.datatype, metric.boolean_value = pb.Boolean, value
        elif isinstance(value, int):
            metric.datatype, metric.long_value = pb.Int64, value & 0xFFFF_FFFF_FFFF_FFFF
        elif isinstance(value, float):
            metric.datatype, metric.double_value = pb.Double, value
        elif isinstance(value, str):
            metric.datatype, metric.string_value = pb.String, value
        else:
            raise TemplateError(f"{name}: a Sparkplug write takes a number, boolean or text")
    return topic, message.SerializeToString()


def _device_id(group: str, node: str, device: str | None) -> str:
    """`{group}.{node}` for an edge node, `{group}.{node}.{device}` for its devices."""
    return device_id(f"{group}.{node}" if device is None else f"{group}.{node}.{device}")


def _origin(group: str, node: str, device: str | None) -> Origin:
    segments = [("group", group), ("node", node)]
    if device is not None:
        segments.append(("device", device))
    return Origin("sparkplug", tuple(segments))


def _declare(message: pb.Payload) -> _Declared:
    """The alias table and datatypes of a birth certificate."""
    declared = _Declared()
    for metric in message.metrics:
        if not metric.name:
            continue
        name = _name(metric)
        if metric.HasField("datatype"):
            declared.types[name] = metric.datatype
        if metric.HasField("alias"):
            declared.names[metric.alias] = name
    return declared


def _name(metric: pb.Payload.Metric) -> str:
    """The metric's name (protobuf gives the bytes of one that is not UTF-8: replaced)."""
    return _text(metric.name)


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def _bdseq(message: pb.Payload) -> int | None:
    """The birth/death sequence number of an NBIRTH or NDEATH, if it carries one."""
    for metric in message.metrics:
        if metric.name == "bdSeq":
            kind = metric.WhichOneof("value")
            if kind == "long_value":
                return metric.long_value
            if kind == "int_value":
                return metric.int_value
    return None


def _value(metric: pb.Payload.Metric, datatype: int) -> object:
    """The metric's value as `sample_from_values` takes it (None: null; bytes: not_scalar)."""
    kind = None if metric.is_null else metric.WhichOneof("value")
    if kind is None:
        return None
    value = getattr(metric, kind)
    if kind in ("int_value", "long_value"):
        bits = _SIGNED_BITS.get(datatype)
        if bits is not None:  # two's complement, whatever width the sender stored it in
            value &= (1 << bits) - 1
            value -= (value >> (bits - 1)) << bits
    elif kind == "float_value":
        value = _float32(value)
    elif kind == "string_value":
        value = _text(value)
    elif kind == "bytes_value":
        value = _array(value, datatype)
    return value  # a DataSet, Template or extension as it is: dropped as not_scalar


def _array(raw: bytes, datatype: int) -> object:
    """A packed Sparkplug 3.0 numeric array as a list; other bytes as they are (not_scalar)."""
    fmt = _ARRAYS.get(datatype)
    if fmt is None or len(raw) % struct.calcsize(fmt):
        return raw
    values = [value for (value,) in struct.iter_unpack(fmt, raw)]
    if datatype == pb.FloatArray:
        return [_float32(value) for value in values]
    return values


def _float32(value: float) -> float:
    """The shortest decimal that is the same float32: 21.3, not 21.299999237060547.

    >>> _float32(struct.unpack("<f", struct.pack("<f", 21.3))[0])
    21.3
    """
    if not math.isfinite(value):
        return value
    for digits in range(6, 10):
        short = float(f"{value:.{digits}g}")
        try:
            if struct.unpack("<f", struct.pack("<f", short))[0] == value:
                return short
        except (OverflowError, struct.error):
            break
    return value
