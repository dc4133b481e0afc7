"""`frontline mappings list|test`: the configured mappings, and what a payload becomes."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from daemon.adapters.mapping_files import (
    MappingFileSet,
    load_mappings,
    preset_names,
    preset_path,
)
from daemon.cli.output import echo, echo_json, iso, settings_of
from daemon.core.ingress import Ingress
from daemon.core.mappings import MappingSet
from daemon.core.messages import Ignored, Message, Meta, Rejected, Reply, Status, Telemetry
from daemon.core.payloads import Limits


@click.group()
def mappings() -> None:
    """Mappings: devices on other topic layouts (docs/devices.md)."""


@mappings.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def mappings_list(ctx: click.Context, as_json: bool) -> None:
    """List the configured mappings (presets first), their routes and subscriptions."""
    settings = settings_of(ctx)
    found, problems = MappingFileSet(settings.mappings.paths, settings.mappings.presets).load()
    for problem in problems:
        echo(problem, err=True)
    if problems:
        sys.exit(1)
    rows: list[dict[str, Any]] = [
        {
            "name": mapping.name,
            "source": mapping.source,
            "routes": [
                {"topic": r.topic.text, "kind": r.kind.value, "device": r.device}
                for r in mapping.routes
            ],
            "commands": None if mapping.commands is None else mapping.commands.topic.text,
        }
        for mapping in found.mappings
    ]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        echo(f"{row['name']} ({row['source']})")
        for route in row["routes"]:
            echo(f"  {route['kind']:<9} {route['topic']}  ->  {route['device']}")
        if row["commands"]:
            echo(f"  commands  {row['commands']}")
    if not rows:
        echo(f"no mappings (presets: {', '.join(preset_names())}; docs/devices.md)")


def _load(file: str) -> MappingSet:
    path = Path(file)
    if not path.exists() and file in preset_names():
        path = preset_path(file)
    if not path.exists():
        raise click.ClickException(
            f"no mapping file {file!r} (or a preset: {', '.join(preset_names())})"
        )
    found, problems = load_mappings([path])
    for problem in problems:
        echo(problem, err=True)
    if problems:
        sys.exit(1)
    return MappingSet(tuple(found), Limits())


def _payload(text: str) -> bytes:
    if text == "-":
        return sys.stdin.buffer.read()
    if text.startswith("@"):
        return Path(text[1:]).read_bytes()
    return text.encode()


def describe(message: Message) -> dict[str, Any]:
    """One decoded message as plain data (what `mappings test` prints)."""
    if isinstance(message, Telemetry):
        notes = message.notes
        return {
            "kind": "telemetry",
            "device": message.device,
            "samples": [
                {"ts": iso(s.ts_ms), "metrics": s.metrics, "attributes": s.attributes}
                for s in message.samples
            ],
            "renamed": dict(notes.renamed) if notes else {},
            "dropped": [list(d) for d in notes.dropped] if notes else [],
            "units": dict(notes.units) if notes else {},
        }
    if isinstance(message, Status):
        return {"kind": "status", "device": message.device, "status": message.status}
    if isinstance(message, Meta):
        return {"kind": "meta", "device": message.device, "meta": message.meta}
    if isinstance(message, Reply):
        return {"kind": "reply", "device": message.device, "command_id": message.command_id}
    if isinstance(message, Ignored):
        return {"kind": "ignored", "route": message.topic}
    assert isinstance(message, Rejected)
    return {"kind": "rejected", "reason": message.reason, "detail": message.detail}


@mappings.command("test")
@click.argument("file")
@click.argument("payload")
@click.option("--topic", required=True, help="The topic the payload arrives on.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def mappings_test(file: str, payload: str, topic: str, as_json: bool) -> None:
    """Print what PAYLOAD on --topic becomes under the mapping FILE (a file or a preset name).

    PAYLOAD is the text itself, `@path` for a file's bytes, or `-` for standard input. Exits 1
    when the message would be rejected.
    """
    ingress = Ingress(mappings=_load(file))
    messages = ingress.classify(topic, _payload(payload), time.time_ns() // 1_000_000)
    rows = [describe(m) for m in messages]
    if as_json:
        echo_json(rows)
    else:
        for row in rows:
            _print(row)
    if any(row["kind"] == "rejected" for row in rows):
        sys.exit(1)


def _print(row: dict[str, Any]) -> None:
    kind = row["kind"]
    if kind == "rejected":
        echo(f"rejected: {row['reason']}: {row['detail']}")
        return
    if kind == "ignored":
        echo(f"ignored by the route {row['route']}")
        return
    echo(f"{kind} from {row['device']}")
    if kind == "status":
        echo(f"  status: {row['status']}")
    elif kind == "meta":
        for key, value in row["meta"].items():
            echo(f"  {key}: {value}")
    elif kind == "telemetry":
        for sample in row["samples"]:
            echo(f"  at {sample['ts']}")
            for name, value in {**sample["metrics"], **sample["attributes"]}.items():
                unit = row["units"].get(name)
                sent = row["renamed"].get(name)
                extra = "".join(
                    [f" {unit}" if unit else "", f"   (sent as {sent!r})" if sent else ""]
                )
                echo(f"    {name} = {value!r}{extra}")
        for name, reason in row["dropped"]:
            echo(f"  dropped {name!r}: {reason}")
