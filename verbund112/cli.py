"""The `verbund112` command line."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import yaml
from pydantic import ValidationError

from verbund112 import asterisk_config


@click.group()
def main() -> None:
    """verbund112: 112 call handling for the Leitstellenverbund Ostthüringen."""


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="YAML settings file")
def serve(config_file: Path | None) -> None:
    """Run the service of one site (AMI, FastAGI, HTTP API)."""
    from verbund112 import logs
    from verbund112.service import Service
    from verbund112.settings import load_settings

    try:
        settings = load_settings(config_file)
    except (ValidationError, FileNotFoundError, yaml.YAMLError) as exc:
        raise click.ClickException(f"configuration: {exc}") from exc
    logs.configure(settings.log)

    async def run() -> None:
        service = Service(settings)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, service.stop)
        loop.add_signal_handler(signal.SIGHUP, service.reload_on_signal)
        await service.run()

    asyncio.run(run())


@main.group()
def lab() -> None:
    """The local Verbund: two Asterisk sites, Redis, services, dispatcher desks."""


@lab.command("up")
@click.option("--desks", default=2, show_default=True, help="registered dispatcher desks per site")
def lab_up(desks: int) -> None:
    """Start everything on 127.0.0.1 and leave it running."""
    from verbund112.lab import lab as lab_module
    from verbund112.lab.processes import LabError

    try:
        state = lab_module.up(seats_per_site=desks, log=click.echo)
    except LabError as exc:
        raise click.ClickException(str(exc)) from exc
    _print_state(state)


@lab.command("down")
def lab_down() -> None:
    """Stop everything `lab up` started."""
    from verbund112.lab import lab as lab_module

    lab_module.down(log=click.echo)


@lab.command("purge")
def lab_purge() -> None:
    """Stop the lab and delete the lab folder, the cached root filesystem included."""
    from verbund112.lab import lab as lab_module
    from verbund112.lab import rootfs

    lab_module.down(log=click.echo)
    rootfs.remove_tree(lab_module.lab_dir())
    click.echo(f"removed {lab_module.lab_dir()}")


@lab.command("status")
def lab_status() -> None:
    """Print where the running lab's endpoints are."""
    from verbund112.lab import lab as lab_module

    state = lab_module.LabState.load()
    if state is None:
        click.echo("no lab is up (verbund112 lab up)")
        sys.exit(1)
    _print_state(state)


def _print_state(state) -> None:  # type: ignore[no-untyped-def]
    from verbund112.lab import lab as lab_module

    alive = {p["role"]: lab_module._is_ours(p["pid"], p["marker"]) for p in state.processes}
    click.echo(f"endpoints: {lab_module.LabState.path()}")
    click.echo(f"redis: {state.redis_url}")
    for name, site in state.sites.items():
        click.echo(
            f"{name}: carrier {site['carrier_sip']}, AMI {site['ami_port']}, FastAGI {site['fastagi_port']}, "
            f"web {site['web_url']}, desks {', '.join(site['desks'])}"
        )
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
    from verbund112.lab import lab as lab_module

    state = lab_module.LabState.load()
    if state is None:
        raise click.ClickException("no lab is up (verbund112 lab up)")
    if (lat is None) != (lon is None):
        raise click.UsageError("--lat and --lon go together")
    info = state.sites[site]
    position = (lat, lon, radius) if lat is not None and lon is not None else None
    scenario = lab_module.SIPP_DIR / ("carrier_112_pidf.xml" if position else "carrier_112.xml")
    args = ["sipp", f"127.0.0.1:{info['sip_port']}", "-sf", str(scenario), "-i", lab_module.CARRIER_ADDRESS,
            "-m", "1", "-key", "caller", number, "-key", "uui", "0123456789ABCDEF",
            "-d", str(int(talk * 1000)), "-timeout", "90s", "-timeout_error", "-nostdin", "-nd"]  # fmt: skip
    if position:
        args += ["-key", "lat", f"{lat:.6f}", "-key", "lon", f"{lon:.6f}", "-key", "radius", f"{radius:.0f}"]
    where = f" at {lat}, {lon} (±{radius:.0f} m)" if position else ""
    click.echo(f"112 call from {number} into {site}'s carrier trunk{where}")
    # what the desks of both sites log during the call tells who answered
    desk_logs = {name: Path(s["desks_log"]) for name, s in state.sites.items()}
    offsets = {name: path.stat().st_size for name, path in desk_logs.items()}
    started = time.monotonic()
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    for name, path in desk_logs.items():
        with path.open() as handle:
            handle.seek(offsets[name])
            for line in handle:
                event = json.loads(line)
                if event.get("event") == "answered":
                    click.echo(f"answered at {name} by dispatcher {event['seat']} (caller shown: {event['caller']})")
    if result.returncode != 0:
        raise click.ClickException(f"the call failed (sipp exit {result.returncode}) after {elapsed:.1f} s")
    click.echo(f"call completed in {elapsed:.1f} s")


@main.group("asterisk-config")
def asterisk_config_group() -> None:
    """The Asterisk configuration of a site (the same files as the lab runs)."""


@asterisk_config_group.command("render")
@click.option("--site", required=True, help="site name (asterisk-config/sites/NAME.yaml) or a site values file")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--secrets", "secrets_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="YAML with ami_secret and dispatcher_passwords; default: from the environment")  # fmt: skip
def render(site: str, out_dir: Path, secrets_file: Path | None) -> None:
    """Write asterisk.conf, pjsip.conf, extensions.conf, ... for one site."""
    try:
        values = asterisk_config.load_site(site)
        secrets = (
            asterisk_config.SiteSecrets.from_file(secrets_file)
            if secrets_file
            else asterisk_config.SiteSecrets.from_environment(values)
        )
        files = asterisk_config.render(values, secrets)
    except (ValidationError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    asterisk_config.write(files, out_dir)
    click.echo(f"wrote {len(files)} files for {values.name} to {out_dir}")
