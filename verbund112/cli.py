"""The `verbund112` command line."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import json
import logging
import os
import signal
import time
from pathlib import Path

import click
import uvloop
import yaml
from pydantic import ValidationError

from verbund112 import __version__, asterisk_config, asterisk_install


@click.group()
@click.version_option(__version__, prog_name="verbund112", message="%(prog)s %(version)s")
def main() -> None:
    """verbund112: 112 call handling for the Leitstellenverbund Ostthüringen."""


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="YAML settings file")
def serve(config_file: Path | None) -> None:
    """Run the service of one site (AMI, FastAGI, HTTP API)."""
    from telephony.fastagi import PeerSetupError
    from verbund112 import logs
    from verbund112.service import Service
    from verbund112.service_manager import watchdog_from_environment
    from verbund112.settings import load_settings
    from verbund112.store import StoreSetupError

    try:
        settings = load_settings(config_file)
    except (ValidationError, FileNotFoundError, yaml.YAMLError) as exc:
        raise click.ClickException(f"configuration: {exc}") from exc
    logs.configure(settings.log)
    # a hung service killed by its manager's watchdog (SIGABRT under systemd) leaves the
    # Python stacks of the hang in its log: where it hung, never what it held
    faulthandler.enable()

    async def run() -> None:
        try:
            service = Service(settings, watchdog=watchdog_from_environment())
        except (PeerSetupError, StoreSetupError) as exc:  # no FastAGI secret, ...; a redis.tls file unusable
            raise click.ClickException(f"configuration: {exc}") from exc
        # what start-up built (modules, settings, models) lives as long as the process: out of the
        # cyclic collector's sight, so that its full collections under load walk only what calls make
        gc.freeze()
        loop = asyncio.get_running_loop()
        logging.getLogger(__name__).info("event loop: %s", type(loop).__module__)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, service.stop)
        loop.add_signal_handler(signal.SIGHUP, service.reload_on_signal)
        await service.run()

    # uvloop (libuv) instead of asyncio's pure-Python loop and transports: about a fifth of the
    # service's CPU per call, on the two cores that Asterisk needs too
    uvloop.run(run())


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML settings file (default: VERBUND112_CONFIG)")  # fmt: skip
@click.option("--timeout", default=3.0, show_default=True, help="seconds to wait for the answer")
def healthcheck(config_file: Path | None, timeout: float) -> None:
    """Exit 0 when this site's service answers /healthz on its configured web address (the image's HEALTHCHECK)."""
    import ipaddress
    import urllib.request

    from verbund112.settings import load_settings

    try:
        web = load_settings(config_file).web
    except (ValidationError, FileNotFoundError, yaml.YAMLError) as exc:
        raise click.ClickException(f"configuration: {exc}") from exc
    host = web.host
    with contextlib.suppress(ValueError):  # a name stays a name; an address may be "any" or IPv6
        address = ipaddress.ip_address(host)
        host = "127.0.0.1" if address.is_unspecified else f"[{host}]" if address.version == 6 else host
    url = f"http://{host}:{web.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            status = answer.status
    except OSError as exc:
        raise click.ClickException(f"{url}: {exc}") from exc
    click.echo(f"{url}: {status}")


@main.command("check-config")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML settings file (default: VERBUND112_CONFIG); the environment counts too")  # fmt: skip
@click.option("--site", "site_values", help="the Asterisk site values: a shipped site or a file (default: the "
              "shipped values of the settings' site)")  # fmt: skip
@click.option("--templates", "templates_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="folder of *.conf.j2 templates; default: the shipped ones")  # fmt: skip
@click.option("--asterisk-dir", type=click.Path(file_okay=False, path_type=Path),
              help="the installed Asterisk configuration to compare (default: /etc/asterisk, if there)")  # fmt: skip
def check_config(config_file: Path | None, site_values: str | None, templates_dir: Path | None,
                 asterisk_dir: Path | None) -> None:  # fmt: skip
    """Check the settings, the rules and the Asterisk configuration together: one file:line: what per problem."""
    from verbund112.config_check import check

    if config_file is None and os.environ.get("VERBUND112_CONFIG"):
        config_file = Path(os.environ["VERBUND112_CONFIG"])
    report = check(config_file, site_values=site_values, templates=templates_dir, asterisk_dir=asterisk_dir)
    for problem in report.problems:
        click.echo(str(problem))
    if report.problems:
        raise click.ClickException(f"{len(report.problems)} problem(s)")
    click.echo(report.summary)


@main.group()
def rules() -> None:
    """Routing rules: check, simulate and compare before they go live."""


def _load_or_fail(path: Path):  # type: ignore[no-untyped-def]
    from routing.rules import RulesError, load_rules

    try:
        return load_rules(path)
    except RulesError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        raise click.ClickException(f"{path}: {len(exc.problems)} problem(s); nothing was changed") from exc


@rules.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def rules_check(file: Path) -> None:
    """Validate a rules file and the data files it names."""
    loaded = _load_or_fail(file)
    spec = loaded.spec
    click.echo(f"{file}: valid ({loaded.digest[:12]})")
    click.echo(f"  sites: {', '.join(f'{name} ({site.queue})' for name, site in spec.sites.items())}")
    forwarding = [t for t in spec.external_targets.values() if t.number]
    click.echo(f"  external targets: {len(spec.external_targets)}, {len(forwarding)} with a forwarding number")
    click.echo(f"  districts: {len(spec.areas.districts)} with a centre, {len(loaded.index.districts)} polygons")
    click.echo(
        f"  area codes: {len(loaded.area_codes)}, cells: {len(loaded.cells)}, "
        f"municipalities: {len(loaded.municipalities)}"
    )
    click.echo(f"  location sources: {' > '.join(spec.source_priority)}")
    for site in spec.sites:
        own = spec.overflow.sites.get(site)
        state = (f"after {own.wait_threshold_s:g} s, or {own.all_busy_after_s:g} s with every desk busy"
                 if own and own.enabled else "off")  # fmt: skip
        click.echo(f"  overflow from {site}: {state}")


@rules.command("simulate")
@click.option("--rules", "rules_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="rules file (default: the shipped rules)")  # fmt: skip
@click.option("--number", default="", help="calling number, any form (+49..., 0049..., 0365...)")
@click.option("--site", default="jena", show_default=True, help="the site whose trunk the call arrives on")
@click.option("--lat", type=float, help="position sent as PIDF-LO (with --lon)")
@click.option("--lon", type=float)
@click.option("--radius", type=float, default=0.0, show_default=True, help="uncertainty radius, metres")
@click.option("--pidf", "pidf_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="a PIDF-LO document as the INVITE would carry it")  # fmt: skip
@click.option("--cell", help="cell id as in P-Access-Network-Info")
@click.option("--partner-down", is_flag=True, help="as if the partner site were not reporting")
@click.option("--json", "as_json", is_flag=True, help="the decision as JSON")
def rules_simulate(
    *, rules_file: Path | None, number: str, site: str, lat: float | None, lon: float | None, radius: float,
    pidf_file: Path | None, cell: str | None, partner_down: bool, as_json: bool,
) -> None:  # fmt: skip
    """Where would this call go, and why."""
    from routing.location import LocationError, Position
    from routing.simulation import as_dict, explain, simulate
    from verbund112.rules_holder import SHIPPED_RULES

    loaded = _load_or_fail(rules_file or SHIPPED_RULES)
    if site not in loaded.spec.sites:
        raise click.UsageError(f"--site must be one of {', '.join(loaded.spec.sites)}")
    if (lat is None) != (lon is None):
        raise click.UsageError("--lat and --lon go together")
    position, civic, problem = None, None, ""
    if pidf_file is not None:
        from routing.pidf import parse_pidf_lo

        try:
            found = parse_pidf_lo(pidf_file.read_bytes())
            position, civic = found.position, found.civic
            problem = "" if position else "; ".join(found.problems)
        except LocationError as exc:
            problem = str(exc)
    elif lat is not None and lon is not None:
        try:
            if not (-90 <= lat <= 90 and -180 <= lon <= 180) or radius < 0:
                raise LocationError("position outside WGS84 ranges or negative radius")
            position = Position(lat, lon, radius, "Circle" if radius else "Point", "simulated")
        except LocationError as exc:
            problem = str(exc)
    alive = frozenset({site}) if partner_down else frozenset(loaded.spec.sites)
    decision = simulate(loaded, number=number, site=site, position=position, pidf_problem=problem,
                        cell_id=cell.upper() if cell else None, alive_sites=alive, now=time.time(),
                        civic=civic)  # fmt: skip
    if as_json:
        click.echo(json.dumps(as_dict(decision), indent=2, ensure_ascii=False))
    else:
        for line in explain(decision):
            click.echo(line)


@rules.command("diff")
@click.argument("old", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(dir_okay=False, path_type=Path))
def rules_diff(old: Path, new: Path) -> None:
    """Which areas and numbers would route differently under NEW than under OLD."""
    from routing.rules_diff import describe_changes

    changes = describe_changes(_load_or_fail(old), _load_or_fail(new))
    if not changes:
        click.echo("no call would route differently")
    for line in changes:
        click.echo(line)


@main.group("asterisk-config")
def asterisk_config_group() -> None:
    """The Asterisk configuration of a site (the same files as the lab runs)."""


@asterisk_config_group.command("render")
@click.option("--site", required=True, help="a shipped site (asterisk-config/sites/NAME.yaml) or a site values file")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="the folder Asterisk reads (/etc/asterisk), or a new one to compare and switch to")  # fmt: skip
@click.option("--secrets", "secrets_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="YAML with ami_secret, fastagi_secret, dispatcher_passwords; default: the environment")  # fmt: skip
@click.option("--templates", "templates_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="folder of *.conf.j2 templates; default: the shipped ones")  # fmt: skip
@click.option("--owner", default=asterisk_install.DEFAULT_OWNER, show_default=True,
              help="user:group of the written files (mode 0640): the group must be Asterisk's")  # fmt: skip
@click.option("--dry-run", "--diff-only", "dry_run", is_flag=True, help="only show the diff; write nothing")
def render(*, site: str, out_dir: Path, secrets_file: Path | None, templates_dir: Path | None, owner: str,
           dry_run: bool) -> None:  # fmt: skip
    """Write asterisk.conf, pjsip.conf, extensions.conf, ... for one site.

    Shows the diff against what is installed (secrets masked), keeps every file it replaces in
    OUT/verbund112-backup/<time>/, and never touches a file it did not write (a manifest in OUT
    names its own).
    """
    try:
        values = asterisk_config.load_site(site)
        secrets = (
            asterisk_config.SiteSecrets.from_file(secrets_file)
            if secrets_file
            else asterisk_config.SiteSecrets.from_environment(values)
        )
        files = asterisk_config.render(values, secrets, templates_dir)
        to_do = asterisk_install.plan(files, out_dir)
        file_owner = None if dry_run else asterisk_install.Owner.parse(owner)
    except (ValidationError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("".join(to_do.diff), nl=False)
    for name in to_do.edited:
        click.echo(f"{out_dir / name}: changed by hand since verbund112 wrote it", err=True)
    if to_do.blocked:
        for name in to_do.foreign:
            click.echo(f"{out_dir / name}: not written by verbund112 (not in {asterisk_install.MANIFEST}): left alone",
                       err=True)  # fmt: skip
        raise click.ClickException(
            f"nothing written to {out_dir}: move the files above away (they are not ours), or render into a new folder"
        )
    summary = f"{len(to_do.changed)} changed, {len(to_do.unchanged)} unchanged, {len(to_do.stale)} to remove"
    if dry_run or file_owner is None:
        click.echo(f"dry run, nothing written to {out_dir}: {summary}")
        return
    try:
        backup = asterisk_install.apply(to_do, file_owner)
    except (asterisk_install.InstallError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"wrote {values.name} to {out_dir}: {summary}" + (f"; the replaced files are in {backup}" if backup else "")
    )


def _add_lab_group() -> None:
    # The lab (top-level lab/, beside this package) is development tooling and is not in the wheel.
    # In a checkout `verbund112 lab ...` works; an installed service simply has no lab group. Only a
    # missing lab is tolerated: a lab that is there but fails to import says so.
    try:
        from lab.cli import lab as lab_group
    except ImportError as exc:
        if exc.name not in {"lab", "lab.cli"}:
            raise
        return
    main.add_command(lab_group)


_add_lab_group()
