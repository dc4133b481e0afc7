"""`frontline replay CSV --device ID`: a recorded data set replayed as one device's telemetry."""

from __future__ import annotations

from pathlib import Path

import click

from daemon.cli.detect import DetectError
from daemon.cli.output import say, settings_of


@click.command("replay")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--device", required=True, help="The device id the rows are published as.")
@click.option("--time-column", help="The column of row times [detected as `detect` does].")
@click.option(
    "--keep-time",
    is_flag=True,
    help="Publish the file's own times (default: shifted so the last row is now).",
)
@click.option("--exclude", multiple=True, help="A column not to publish (labels...); repeatable.")
@click.pass_context
def replay_command(
    ctx: click.Context,
    csv_file: Path,
    device: str,
    time_column: str | None,
    keep_time: bool,
    exclude: tuple[str, ...],
) -> None:
    """Publish every row of CSV_FILE to `devices/ID/telemetry` as `{"ts", "values"}`, QoS 1.

    Column names are sent as written; the daemon stores them under canonical names
    (docs/devices.md). With --keep-time, rows older than `store.retention` are removed by the
    daemon's next retention round.
    """
    from simulators.replay import ReplayPlan, replay

    settings = settings_of(ctx)
    mqtt = settings.mqtt
    plan = ReplayPlan(device, time_column, keep_time, frozenset(exclude), prefix=mqtt.topic_prefix)
    password = mqtt.password.get_secret_value() if mqtt.password else None
    try:
        count, seconds = replay(csv_file, plan, mqtt.host, mqtt.port, mqtt.username, password)
    except DetectError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot reach mqtt://{mqtt.host}:{mqtt.port}: {exc}") from exc
    say(f"published {count} rows of {csv_file} as {device} in {seconds:.1f}s")
