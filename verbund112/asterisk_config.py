"""The Asterisk configuration of a Verbund site, rendered from one set of templates.

Both sites use the same templates (``asterisk-config/templates``); only the
site values differ (``asterisk-config/sites/<site>.yaml``). Both ship with the
package (verbund112.shipped); other templates and site values can be given from
any folder. The lab renders the
same files with its own ports and paths, so what is tested is what runs in
production. Secrets never live in the site files: they come from the
environment or a secrets file outside the repository.
"""

from __future__ import annotations

import ipaddress
import os
import secrets as secrets_module
from pathlib import Path
from typing import Annotated

import jinja2
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, IPvAnyNetwork, StringConstraints, model_validator

from telephony import fastagi
from verbund112 import shipped

SeatId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
SiteName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,15}$")]


def _one_host(value: str) -> str:
    # a network in the AMI permit lets every host in it try the service's secret
    network = ipaddress.ip_network(value)
    if network.num_addresses != 1:
        raise ValueError(f"{value} is a network: permit the service's own address (a single host)")
    return f"{network.network_address}/{network.prefixlen}"


def _not_a_wildcard(value: str) -> str:
    if ipaddress.ip_address(value).is_unspecified:
        raise ValueError(f"{value} listens on every address: bind AMI to the one the service reaches it on")
    return value


SingleHost = Annotated[str, AfterValidator(_one_host)]
BindAddress = Annotated[str, AfterValidator(_not_a_wildcard)]


class AsteriskPaths(BaseModel):
    """Where one Asterisk instance keeps its files (as seen from inside its root)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    etc: str = "/etc/asterisk"
    modules: str = "/usr/lib/x86_64-linux-gnu/asterisk/modules"
    lib: str = "/var/lib/asterisk"
    data: str = "/usr/share/asterisk"
    spool: str = "/var/spool/asterisk"
    run: str = "/var/run/asterisk"
    log: str = "/var/log/asterisk"
    cache: str = "/var/cache/asterisk"


class SiteValues(BaseModel):
    """Everything that differs between the Jena and the Gera Asterisk."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: SiteName
    partner: SiteName
    queue: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
    dispatchers: list[SeatId] = Field(min_length=1)
    carrier_match: list[str] = Field(min_length=1)
    # The inter-site trunk: TLS with mutual certificates (see docs/security.md). This site's
    # listener address (the partner dials it and is recognised by its own), and the partner's.
    intersite_address: str
    partner_host: str
    # where the dispatcher desks are (acl.conf): a desk registering from elsewhere is refused
    desk_networks: list[IPvAnyNetwork] = Field(min_length=1)
    # OPTIONS to each registered desk this often (seconds), so the queue skips a dead one; 0: off
    desk_qualify_s: int = Field(default=5, ge=0, le=60)
    # where calls for Leitstellen outside the Verbund go (the carrier's SBC); None: not forwarded
    carrier_outbound_uri: Annotated[str, StringConstraints(pattern=r"^sip:[A-Za-z0-9.:@+-]{1,120}$")] | None = None
    external_ring_s: int = Field(default=30, ge=5)
    intersite_port: int = 5061
    partner_tls_port: int = 5061
    # PEM files on the Asterisk host: this site's trunk certificate and key, and the Verbund CA
    # that signed both sites' certificates (and nothing else: the trunk trusts what it signed)
    intersite_cert_file: str = "/etc/asterisk/keys/intersite.crt"
    intersite_key_file: str = "/etc/asterisk/keys/intersite.key"
    intersite_ca_file: str = "/etc/asterisk/keys/verbund-ca.crt"
    partner_exten: str = "112-overflow"
    partner_qualify_s: int = Field(default=2, ge=1)
    sip_bind_address: str = "0.0.0.0"
    sip_port: int = 5060
    rtp_port_start: int = 10000
    rtp_port_end: int = 20000
    ami_bind_address: BindAddress = "127.0.0.1"
    ami_port: int = 5038
    ami_username: str = "verbund112"
    # the service's address(es): single hosts, written as a.b.c.d/32 (or /128)
    ami_permit: list[SingleHost] = Field(default=["127.0.0.1/32"], min_length=1)
    fastagi_url: str = "agi://127.0.0.1:4573"
    # one desk at a time, the one idle longest: what a Leitstelle ACD does
    queue_strategy: str = "leastrecent"
    # Seconds. agi_deadline_s bounds the whole FastAGI exchange (TIMEOUT(absolute)).
    agi_deadline_s: int = Field(default=2, ge=1, le=10)
    # Unanswered calls wait in AstDB this long for the service to collect them (after a restart
    # or an AMI cut); the hangup handler deletes older hours. Caller numbers: personal data.
    abandoned_outbox_keep_s: int = Field(default=7200, ge=600, le=86400)
    member_ring_s: int = Field(default=15, ge=1)
    local_wait_s: int = Field(default=20, ge=1)
    partner_ring_s: int = Field(default=20, ge=2)
    partner_queue_wait_s: int = Field(default=18, ge=1)
    # Days Asterisk's own logs are kept (messages.log, security.log, queue_log: the only one with
    # caller numbers); enforced by the rendered verbund112-logrotate.conf
    log_retention_days: int = Field(default=7, ge=1, le=90)
    paths: AsteriskPaths = AsteriskPaths()
    # benchmark lab only: SIP URI of a peer that answers every queue call at once
    bench_desk_uri: Annotated[str, StringConstraints(pattern=r"^sip:[A-Za-z0-9.:@+-]{1,120}$")] | None = None
    # benchmark lab only: instead of that one peer, this many queue members of one call each
    # (bench-d1, bench-d2, ...), all answered by the same peer
    bench_desks: int = Field(default=0, ge=0, le=200)

    @model_validator(mode="after")
    def _partner_gives_up_first(self) -> SiteValues:
        # The partner must hand an unanswered call back before our Dial gives up,
        # or the caller hears a gap while both sides time out.
        if self.partner_queue_wait_s >= self.partner_ring_s:
            raise ValueError("partner_queue_wait_s must be shorter than partner_ring_s")
        if self.partner == self.name:
            raise ValueError("a site cannot be its own partner")
        # the dialplan tells a trunk leg from a forged one by the address:port it arrived on
        try:
            address = ipaddress.ip_address(self.intersite_address)
        except ValueError:
            raise ValueError("intersite_address must be an IP address") from None
        if address.is_unspecified:
            raise ValueError("intersite_address must be a concrete address, not a wildcard")
        if self.intersite_port == self.sip_port:
            raise ValueError("intersite_port must differ from sip_port")
        return self

    @property
    def intersite_listen(self) -> str:
        """The trunk's TLS address:port as pjsip binds and reports it (CHANNEL(pjsip,local_addr))."""
        if ipaddress.ip_address(self.intersite_address).version == 6:
            return f"[{self.intersite_address}]:{self.intersite_port}"
        return f"{self.intersite_address}:{self.intersite_port}"


class SiteSecrets(BaseModel):
    """Secrets of one site: filled from the environment or a secrets file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ami_secret: str = Field(min_length=12)
    # in verbund112.conf, asked for by the service first; its fastagi.secret is the same value
    fastagi_secret: str = Field(pattern=rf"^{fastagi.SECRET_PATTERN.pattern}$")
    dispatcher_passwords: dict[str, str]

    @classmethod
    def generate(cls, site: SiteValues) -> SiteSecrets:
        """Fresh random secrets, as the lab uses them."""
        return cls(
            ami_secret=secrets_module.token_urlsafe(24),
            fastagi_secret=secrets_module.token_urlsafe(24),
            dispatcher_passwords={seat: secrets_module.token_urlsafe(12) for seat in site.dispatchers},
        )

    @classmethod
    def from_file(cls, path: Path) -> SiteSecrets:
        return cls.model_validate(yaml.safe_load(path.read_text()))

    @classmethod
    def from_environment(cls, site: SiteValues, environ: dict[str, str] | None = None) -> SiteSecrets:
        """VERBUND112_AMI_SECRET, VERBUND112_FASTAGI_SECRET and VERBUND112_DISPATCHER_PASSWORD_<SEAT>
        (seat upper-cased, - as _)."""
        env = os.environ if environ is None else environ
        passwords = {}
        for seat in site.dispatchers:
            key = "VERBUND112_DISPATCHER_PASSWORD_" + seat.upper().replace("-", "_")
            if key not in env:
                raise ValueError(f"{key} is not set")
            passwords[seat] = env[key]
        for key in ("VERBUND112_AMI_SECRET", "VERBUND112_FASTAGI_SECRET"):
            if key not in env:
                raise ValueError(f"{key} is not set")
        return cls(ami_secret=env["VERBUND112_AMI_SECRET"], fastagi_secret=env["VERBUND112_FASTAGI_SECRET"],
                   dispatcher_passwords=passwords)  # fmt: skip

    @model_validator(mode="after")
    def _no_config_injection(self) -> SiteSecrets:
        for value in [self.ami_secret, *self.dispatcher_passwords.values()]:
            if any(ch in value for ch in "\r\n;[]") or not value.strip():
                raise ValueError("secrets may not contain line breaks, ';', '[' or ']'")
        return self


def load_site(name_or_path: str | Path, **overrides: object) -> SiteValues:
    """The shipped site values of a site name, or a site values file from any folder, with overrides."""
    path = Path(name_or_path)
    if not path.suffix:
        path = shipped.site_values(str(name_or_path))
    data = yaml.safe_load(path.read_text()) or {}
    data.update(overrides)
    return SiteValues.model_validate(data)


def template_environment(templates: Path) -> jinja2.Environment:
    """The Jinja environment the templates of a folder are rendered in (a missing value is an error)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # Asterisk config files, not HTML
    )


def template_names(env: jinja2.Environment) -> list[str]:
    """The ``*.conf.j2`` templates of the environment's folder; each renders to the file without ``.j2``."""
    return sorted(env.list_templates(filter_func=lambda n: n.endswith(".conf.j2")))


def render_template(env: jinja2.Environment, name: str, site: SiteValues, site_secrets: SiteSecrets) -> str:
    return env.get_template(name).render(site=site, paths=site.paths, secrets=site_secrets)


def render(site: SiteValues, site_secrets: SiteSecrets, templates: Path | None = None) -> dict[str, str]:
    """All configuration files of one site: file name -> content (from the shipped templates by default)."""
    templates = templates or shipped.asterisk_templates()
    missing = set(site.dispatchers) - set(site_secrets.dispatcher_passwords)
    if missing:
        raise ValueError(f"no password for dispatcher seat(s): {', '.join(sorted(missing))}")
    env = template_environment(templates)
    names = template_names(env)
    if not names:
        raise ValueError(f"{templates}: no *.conf.j2 templates")
    return {name.removesuffix(".j2"): render_template(env, name, site, site_secrets) for name in names}


def write(files: dict[str, str], directory: Path) -> None:
    """Write rendered files; they hold secrets, so only the owner may read them."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        target = directory / name
        target.write_text(content)
        target.chmod(0o640)
