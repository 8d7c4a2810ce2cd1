"""``verbund112 check-config``: the settings, the rules and the Asterisk configuration, checked together.

Offline, before a change goes live: the service's settings (as ``serve`` would load them, the
environment included), the rules file they name with its data files, the Asterisk site values,
every template rendered with them, the dialplan contract (telephony.dialplan) in the rendered
``extensions.conf``, the values that must agree between the service and its Asterisk, the TLS
files of ``redis.tls`` (there, readable, the key not open to everyone, a certificate with its key), and, when
an installed configuration folder is there, that it is what ``asterisk-config render`` would write.
Every problem is one ``file:line: what``; YAML line numbers come from the nodes' marks.
"""

from __future__ import annotations

import difflib
import hmac
import ipaddress
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
import yaml
from pydantic import ValidationError

from routing.rules import Rules, RulesError, load_rules
from telephony import dialplan
from telephony.fastagi import PeerPolicy, PeerSetupError
from verbund112 import asterisk_config, asterisk_install, shipped
from verbund112.settings import Settings, load_settings
from verbund112.store import tls_file_problems

ENVIRONMENT = "environment"  # the "file" of a value that came from a VERBUND112_* variable


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what}"


@dataclass
class Report:
    problems: list[Problem]
    summary: str  # what was checked, when there are no problems


# -- YAML with line numbers --------------------------------------------------------------------------


class YamlFile:
    """A YAML file read for checking: its data and the line of every key and item, by path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[tuple[Any, ...], int] = {}
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        self.data: Any = yaml.safe_load(text) if node is not None else None
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple[Any, ...]) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                self.lines[(*path, key.value)] = key.start_mark.line + 1
                self._walk(value, (*path, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, (*path, index))

    def line_of(self, path: tuple[Any, ...]) -> int | None:
        """The line of the deepest part of the path the file has; None: the file does not set it."""
        for cut in range(len(path), 0, -1):
            if path[:cut] in self.lines:
                return self.lines[path[:cut]]
        return None

    def problem(self, path: tuple[Any, ...], what: str) -> Problem:
        return Problem(str(self.path), self.line_of(path) or 1, what)


def read_yaml(path: Path) -> YamlFile | Problem:
    try:
        return YamlFile(path)
    except FileNotFoundError:
        return Problem(str(path), 0, "does not exist")
    except (OSError, UnicodeDecodeError) as exc:
        return Problem(str(path), 0, f"cannot be read: {exc}")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return Problem(str(path), mark.line + 1 if mark else 0, f"not valid YAML: {getattr(exc, 'problem', exc)}")


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def validation_problems(error: ValidationError, source: YamlFile | None, env_prefix: str = "") -> list[Problem]:
    """Pydantic's errors at the YAML node they came from (or the environment variable that set the value)."""
    problems = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if not (isinstance(part, str) and part.startswith("function-")))
        what = f"{_field(loc)}: {item['msg']}"
        variable = env_prefix + "__".join(str(part) for part in loc).upper()
        if env_prefix and loc and variable in os.environ:
            problems.append(Problem(ENVIRONMENT, 0, f"{variable}: {what}"))
        elif source is not None:
            problems.append(source.problem(loc, what))
        else:
            problems.append(Problem("(defaults)", 0, what))
    return problems


# -- the check ---------------------------------------------------------------------------------------


def _load_settings(config_file: Path | None, settings_file: YamlFile | None) -> Settings | list[Problem]:
    try:
        return load_settings(config_file)
    except ValidationError as exc:
        return validation_problems(exc, settings_file, "VERBUND112_")
    except FileNotFoundError as exc:  # VERBUND112_SECRETS_DIR names no folder
        return [Problem(ENVIRONMENT, 0, str(exc))]


def check(
    config_file: Path | None,
    *,
    site_values: str | None = None,
    templates: Path | None = None,
    asterisk_dir: Path | None = None,
) -> Report:
    """Everything ``serve`` and ``asterisk-config render`` would refuse or get wrong, as problems."""
    problems: list[Problem] = []
    settings_file: YamlFile | None = None
    if config_file is not None:
        read = read_yaml(config_file)
        if isinstance(read, Problem):
            return Report([read], "")
        settings_file = read
        if read.data is not None and not isinstance(read.data, dict):
            return Report([Problem(str(config_file), 1, "the settings must be a mapping")], "")
    settings = _load_settings(config_file, settings_file)
    if not isinstance(settings, Settings):
        return Report(settings, "")
    where = _SettingsLines(settings_file)
    try:
        PeerPolicy.from_settings(settings.fastagi, asterisk_host=settings.ami.host)
    except PeerSetupError as exc:
        problems.append(where.problem(("fastagi",), str(exc)))
    if settings.redis.tls is not None:
        problems += [where.problem(("redis", "tls", setting), f"redis.tls.{setting}: {what}")
                     for setting, what in tls_file_problems(settings.redis.tls)]  # fmt: skip

    rules = None
    rules_path = settings.rules_file or shipped.rules_file()
    try:
        rules = load_rules(rules_path)
    except RulesError as exc:
        problems += [_rules_problem(text, rules_path) for text in exc.problems]
    if rules is not None:
        problems += _rules_agree(settings, rules, rules_path, where)

    site_source = site_values or str(shipped.site_values(settings.site))
    site_file = read_yaml(Path(site_source) if Path(site_source).suffix else shipped.site_values(site_source))
    if isinstance(site_file, Problem):
        return Report([*problems, site_file], "")
    try:
        site = asterisk_config.SiteValues.model_validate(site_file.data or {})
    except ValidationError as exc:
        return Report([*problems, *validation_problems(exc, site_file)], "")
    problems += _site_agrees(settings, site, site_file, where)

    template_dir = templates or shipped.asterisk_templates()
    files, render_problems = _render(site, template_dir)
    problems += render_problems
    if "extensions.conf" in files:
        problems += _contract_problems(files["extensions.conf"], template_dir, site.carrier_outbound_uri is not None)
    installed = asterisk_dir if asterisk_dir is not None else Path(site.paths.etc)
    compared = ""
    if installed.is_dir() and files and not render_problems:
        problems += _installed_problems(files, installed)
        problems += _secrets_agree(settings, site, installed)
        compared = f", {installed} as rendered"
    digest = f" ({rules.digest[:12]})" if rules else ""
    summary = (f"configuration valid: settings {config_file or '(defaults)'}, rules {rules_path}{digest}, "
               f"Asterisk {site.name}: {len(files)} files rendered{compared}")  # fmt: skip
    return Report(problems, summary)


class _SettingsLines:
    """Where a setting is given: its line in the settings file, or the environment, or the default."""

    def __init__(self, source: YamlFile | None) -> None:
        self._source = source

    def problem(self, path: tuple[str, ...], what: str) -> Problem:
        variable = "VERBUND112_" + "__".join(path).upper()
        if variable in os.environ:
            return Problem(ENVIRONMENT, 0, f"{variable}: {what}")
        if self._source is not None:
            line = self._source.line_of(path)
            return Problem(str(self._source.path), line or 1, what if line else f"{'.'.join(path)} (default): {what}")
        return Problem("(defaults)", 0, what)


def _rules_problem(text: str, rules_path: Path) -> Problem:
    # the rules loader already says "file:line: field: what"; keep it, parsed
    file, _, rest = text.partition(":")
    line, _, what = rest.partition(":")
    if line.strip().isdigit():
        return Problem(file, int(line), what.strip())
    return Problem(file or str(rules_path), 0, rest.strip())


def _rules_agree(settings: Settings, rules: Rules, rules_path: Path, where: _SettingsLines) -> list[Problem]:
    problems = []
    for key, name in (("site", settings.site), ("partner", settings.partner)):
        if name not in rules.spec.sites:
            problems.append(where.problem((key,), f"{key} {name!r} is not a site of the rules {rules_path}"))
    own = rules.spec.sites.get(settings.site)
    if own is not None and own.queue != settings.queue:
        problems.append(where.problem(("local_queue",), f"the queue {settings.queue!r} is not the rules' "
                                                        f"queue of {settings.site} ({own.queue!r})"))  # fmt: skip
    return problems


def _site_agrees(
    settings: Settings, site: asterisk_config.SiteValues, site_file: YamlFile, where: _SettingsLines
) -> list[Problem]:
    """What the service and its Asterisk must agree on."""
    pairs: list[tuple[tuple[str, ...], Any, str, Any]] = [
        (("site",), settings.site, "name", site.name),
        (("partner",), settings.partner, "partner", site.partner),
        (("local_queue",), settings.queue, "queue", site.queue),
        (("ami", "port"), settings.ami.port, "ami_port", site.ami_port),
        (("ami", "username"), settings.ami.username, "ami_username", site.ami_username),
        (("fastagi", "port"), settings.fastagi.port, "fastagi_url", urlsplit(site.fastagi_url).port or 4573),
    ]
    if _is_ip(settings.ami.host):
        pairs.append((("ami", "host"), settings.ami.host, "ami_bind_address", site.ami_bind_address))
    problems = []
    for setting, ours, value, theirs in pairs:
        if ours != theirs:
            line = site_file.line_of((value,))
            at = f"{site_file.path}:{line}" if line else f"{site_file.path} (default)"
            problems.append(where.problem(setting, f"{'.'.join(setting)} is {ours!r}, but {value} of the Asterisk "
                                                   f"site values is {theirs!r} ({at})"))  # fmt: skip
    return problems


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _render(site: asterisk_config.SiteValues, templates: Path) -> tuple[dict[str, str], list[Problem]]:
    """Every template rendered (with stand-in secrets: the check needs none), or where it fails."""
    env = asterisk_config.template_environment(templates)
    names = asterisk_config.template_names(env)
    problems = [Problem(str(templates / f"{name}.j2"), 0, f"missing: Asterisk needs {name} from it")
                for name in _required_files() if f"{name}.j2" not in names]  # fmt: skip
    files = {}
    stand_in = asterisk_config.SiteSecrets.generate(site)
    for name in names:
        try:
            files[name.removesuffix(".j2")] = asterisk_config.render_template(env, name, site, stand_in)
        except jinja2.TemplateError as exc:
            path = str(templates / name)
            line = getattr(exc, "lineno", None) or _template_line(exc, path)
            problems.append(Problem(path, line, f"does not render: {exc.message or exc}"))
    return files, problems


def _required_files() -> list[str]:
    """The files the shipped templates make: other templates must make each of them too."""
    shipped_templates = asterisk_config.template_environment(shipped.asterisk_templates())
    return [name.removesuffix(".j2") for name in asterisk_config.template_names(shipped_templates)]


def _template_line(exc: BaseException, path: str) -> int:
    # Jinja rewrites the traceback so that a template's frame carries the template's file and line
    line, tb = 0, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _contract_names(forwards: bool) -> Iterator[str]:
    for name, value in vars(dialplan).items():
        # the external route forwards only where the site has a carrier outbound trunk
        needed = value != dialplan.TARGET_NUMBER or forwards
        if name.isupper() and isinstance(value, str) and value.startswith("V112") and needed:
            yield value
    yield f"/{dialplan.ROUTE_SCRIPT},"


def _contract_problems(extensions: str, templates: Path, forwards: bool) -> list[Problem]:
    path = str(templates / "extensions.conf.j2")
    return [Problem(path, 0, f"the dialplan does not use {name!r}, which the service relies on (telephony/dialplan.py)")
            for name in _contract_names(forwards) if name not in extensions]  # fmt: skip


def _installed_problems(files: dict[str, str], installed: Path) -> list[Problem]:
    """The installed folder against a render (secret values aside: the check does not know them)."""
    problems = []
    for name, content in sorted(files.items()):
        target = installed / name
        if not target.is_file():
            problems.append(Problem(str(target), 0, "missing: asterisk-config render would write it"))
            continue
        mode = stat.S_IMODE(target.stat().st_mode)
        if mode & 0o007:
            problems.append(Problem(str(target), 0, f"readable by everyone (mode {mode:04o}): 0640 it must be"))
        ours = asterisk_install.masked(content).splitlines()
        theirs = asterisk_install.masked(target.read_text(errors="replace")).splitlines()
        if ours != theirs:
            matcher = difflib.SequenceMatcher(a=theirs, b=ours, autojunk=False)
            first = next(op for op in matcher.get_opcodes() if op[0] != "equal")
            what = "differs from what asterisk-config render would write (see its --dry-run)"
            problems.append(Problem(str(target), first[1] + 1, what))
    return problems


def _secrets_agree(settings: Settings, site: asterisk_config.SiteValues, installed: Path) -> list[Problem]:
    """The service's secrets against the installed Asterisk's, compared in constant time and never printed."""
    fastagi_secret = settings.fastagi.secret.get_secret_value() if settings.fastagi.secret else ""
    expected = [
        ("manager.conf", site.ami_username, settings.ami.secret.get_secret_value(), "ami.secret",
         "the service cannot log in to AMI"),
        (dialplan.FASTAGI_SECRET_FILE, "fastagi", fastagi_secret, "fastagi.secret",
         "every FastAGI request is refused and calls take the dialplan's own route"),
    ]  # fmt: skip
    problems = []
    for name, section, ours, setting, effect in expected:
        found = _installed_secret(installed / name, section)
        if found is not None and not hmac.compare_digest(found[0].encode(), ours.encode()):
            problems.append(Problem(str(installed / name), found[1], f"the secret of [{section}] is not {setting} "
                                                                      f"of the settings: {effect}"))  # fmt: skip
    return problems


def _installed_secret(path: Path, section: str) -> tuple[str, int] | None:
    """The value and line of ``secret =`` in a section of an Asterisk configuration file (None: not there)."""
    if not path.is_file():
        return None
    current = None
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        text = line.split(";", 1)[0].strip()  # secrets hold no ";" (asterisk_config.SiteSecrets)
        if text.startswith("["):
            current = text[1:].split("]", 1)[0]
        elif current == section and (found := _SECRET.fullmatch(text)):
            return found.group(1), number
    return None


_SECRET = re.compile(r"secret\s*=\s*(.*)")
