"""`verbund112 lab ...`: the local Verbund from the command line.

Not part of the product: verbund112/cli.py adds this group when ``lab`` can be
imported, which is the case in a checkout (scripts/bootstrap puts the checkout on
the virtualenv's path) and never for an installed wheel.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from lab import lab as lab_module
from lab.processes import LabError


@click.group()
def lab() -> None:
    """The local Verbund: two Asterisk sites, Redis, services, dispatcher desks."""


@lab.command("up")
@click.option("--desks", default=2, show_default=True, help="registered dispatcher desks per site")
def lab_up(desks: int) -> None:
    """Start everything on 127.0.0.1 and leave it running."""
    try:
        state = lab_module.up(seats_per_site=desks, log=click.echo)
    except LabError as exc:
        raise click.ClickException(str(exc)) from exc
    _print_state(state)


@lab.command("down")
def lab_down() -> None:
    """Stop everything `lab up` started."""
    lab_module.down(log=click.echo)


@lab.command("purge")
def lab_purge() -> None:
    """Stop the lab and delete the lab folder, the cached root filesystem included."""
    lab_module.down(log=click.echo)
    directory = lab_module.lab_dir()
    if not directory.exists():
        click.echo(f"{directory}: no lab folder")
        return
    try:
        lab_module.purge_lab_dir(directory)
    except LabError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"removed {directory}")


@lab.command("status")
def lab_status() -> None:
    """Print where the running lab's endpoints are."""
    state = lab_module.LabState.load()
    if state is None:
        click.echo("no lab is up (verbund112 lab up)")
        sys.exit(1)
    _print_state(state)


def _print_state(state: lab_module.LabState) -> None:
    alive = {p["role"]: lab_module._is_ours(p["pid"], p["marker"]) for p in state.processes}
    click.echo(f"endpoints: {lab_module.LabState.path()}")
    sentinels = ", ".join(state.redis["sentinels"])
    click.echo(f"redis: master {state.redis['master_name']!r} through the sentinels {sentinels}")
    for name, site in state.sites.items():
        click.echo(
            f"{name}: carrier {site['carrier_sip']}, AMI {site['ami_port']}, FastAGI {site['fastagi_port']}, "
            f"web {site['web_url']}, desks {', '.join(site['desks'])}"
        )
        if "service_events" in site:
            click.echo(f"  service log {site['service_log']}, supervisor events {site['service_events']}")
    down = [role for role, ok in alive.items() if not ok]
    click.echo("all processes running" if not down else f"NOT running: {', '.join(down)}")


@lab.command("call")
@click.option("--number", default="+4936419876543", show_default=True, help="calling number (any German form)")
@click.option("--site", type=click.Choice(["jena", "gera"]), default="jena", show_default=True,
              help="the site whose carrier trunk gets the call")  # fmt: skip
@click.option("--lat", type=float, help="send a PIDF-LO position (needs --lon)")
@click.option("--lon", type=float)
@click.option("--radius", type=float, default=25.0, show_default=True, help="uncertainty radius, metres")
@click.option("--talk", type=float, default=3.0, show_default=True, help="seconds the caller talks")
def lab_call(*, number: str, site: str, lat: float | None, lon: float | None, radius: float, talk: float) -> None:
    """Place a 112 call into the lab as the telephone network would."""
    state = lab_module.LabState.load()
    if state is None:
        raise click.ClickException("no lab is up (verbund112 lab up)")
    if (lat is None) != (lon is None):
        raise click.UsageError("--lat and --lon go together")
    info = state.sites[site]
    position = (lat, lon, radius) if lat is not None and lon is not None else None
    where = f" at {lat}, {lon} (±{radius:.0f} m)" if position else ""
    click.echo(f"112 call from {number} into {site}'s carrier trunk{where}")
    # what the desks of both sites log during the call tells who answered
    desk_logs = {name: Path(s["desks_log"]) for name, s in state.sites.items()}
    offsets = {name: path.stat().st_size for name, path in desk_logs.items()}
    started = time.monotonic()
    process = lab_module.sipp_call(info["sip_port"], number, talk_ms=int(talk * 1000), position=position, timeout_s=90)
    process.communicate()
    elapsed = time.monotonic() - started
    for name, path in desk_logs.items():
        with path.open() as handle:
            handle.seek(offsets[name])
            for line in handle:
                # the desks' JSON events, amid whatever pyVoIP prints
                if not line.startswith("{"):
                    continue
                event = json.loads(line)
                if event.get("event") == "answered":
                    click.echo(f"answered at {name} by dispatcher {event['seat']} (caller shown: {event['caller']})")
    if process.returncode != 0:
        raise click.ClickException(f"the call failed (sipp exit {process.returncode}) after {elapsed:.1f} s")
    click.echo(f"call completed in {elapsed:.1f} s")
