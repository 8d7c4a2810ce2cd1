"""Two lab sites in network namespaces of their own, with one link between them that can be cut.

Drill 6 (lab/drill.py) needs a Verbund whose sites reach each other only over an inter-site link,
as Jena and Gera do over their WAN, so that the link can be cut while both sites live. This
module builds that with ``ip netns`` and veth pairs (root only):

    root namespace: the test, the carrier's sipp, the witness sentinel (all on OUTSIDE)
       |  veth <tag>jr/<tag>jo            |  veth <tag>gr/<tag>go
    v112-<instance>-jena -- veth <tag>jx/<tag>gx -- v112-<instance>-gera
      site address 10.112.B+1.1             site address 10.112.B+2.1

Each site namespace holds its Asterisk, service, Redis node, sentinel and desks, all on the
site's address (on its link to the root namespace). A site reaches the partner's address only
over the inter-site link (a /32 route with the site's own address as source, so the partner's
Asterisk recognises the trunk by it); it reaches the root namespace's OUTSIDE address over its own
link. The root namespace routes both site ranges but does not forward (and a site has no route
to the other through it), so while the link is cut nothing inter-site crosses anywhere:
the trunk, Redis replication, the sentinels' links and the partner watch all go silent.

The cut drops every packet arriving on the inter-site link at both ends (iptables in the site
namespaces): a cut WAN is silence, not resets, and the link's routes stay. Everything is named
after the lab instance (a tag of 6 hex digits), so parallel labs do not collide; ``remove()`` is
idempotent and run before building, and deleting a namespace takes its veths and rules with it.
A run killed before it could clean up leaves its namespaces; the next build sweeps those of
instances whose process is gone (a drill's instance ends with its pid).
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lab.processes import LabError

SITES = ("jena", "gera")
_BASE = "10.112"  # a private range; the blocks of parallel labs differ by the instance's tag
PREFIX = "v112-"  # of the namespaces' names: v112-<instance>-<site>


def _ip(*args: str, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    command = ["ip", *(["-n", netns] if netns else []), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)


def _must(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        raise LabError(f"{' '.join(result.args)}: {result.stderr.strip()}")


@dataclass(frozen=True)
class SplitSites:
    """The namespaces, links and addresses of one lab instance (see the module's docstring)."""

    instance: str

    @property
    def tag(self) -> str:
        return "v" + hashlib.sha256(self.instance.encode()).hexdigest()[:6]

    @property
    def _block(self) -> int:
        return 16 * (int(self.tag[1:], 16) % 15)  # 0, 16, ... 224: four /24 of each block are used

    def netns(self, site: str) -> str:
        return f"{PREFIX}{self.instance}-{site}"

    def address(self, site: str) -> str:
        """The site's address: every server of the site listens on it."""
        return f"{_BASE}.{self._block + 1 + SITES.index(site)}.1"

    def _outside_of(self, site: str) -> str:
        return f"{_BASE}.{self._block + 1 + SITES.index(site)}.254"

    @property
    def outside(self) -> str:
        """The root namespace's address that both sites reach over their own link (not the inter-site one):
        the carrier's sipp sends from it, the witness sentinel listens on it."""
        return self._outside_of(SITES[0])

    def _link_end(self, site: str) -> str:
        return f"{_BASE}.{self._block + 3}.{1 + SITES.index(site)}"

    def _veth(self, site: str, end: str) -> str:
        return f"{self.tag}{site[0]}{end}"  # r: in the site, o: in the root namespace, x: inter-site

    def build(self) -> None:
        sweep()
        self.remove()
        try:
            self._build()
        except BaseException:
            self.remove()
            raise

    def _build(self) -> None:
        for site in SITES:
            namespace = self.netns(site)
            _must(_ip("netns", "add", namespace))
            _must(_ip("link", "set", "lo", "up", netns=namespace))
            inner, outer = self._veth(site, "r"), self._veth(site, "o")
            _must(_ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", namespace))
            _must(_ip("addr", "add", f"{self.address(site)}/24", "dev", inner, netns=namespace))
            _must(_ip("link", "set", inner, "up", netns=namespace))
            _must(_ip("addr", "add", f"{self._outside_of(site)}/24", "dev", outer))
            _must(_ip("link", "set", outer, "up"))
        jena, gera = SITES
        _must(_ip("link", "add", self._veth(jena, "x"), "netns", self.netns(jena), "type", "veth",
                  "peer", "name", self._veth(gera, "x"), "netns", self.netns(gera)))  # fmt: skip
        for site in SITES:
            partner = gera if site == jena else jena
            namespace, link = self.netns(site), self._veth(site, "x")
            _must(_ip("addr", "add", f"{self._link_end(site)}/30", "dev", link, netns=namespace))
            _must(_ip("link", "set", link, "up", netns=namespace))
            # the partner only over the inter-site link, from the site's own address
            _must(_ip("route", "add", f"{self.address(partner)}/32", "via", self._link_end(partner),
                      "src", self.address(site), netns=namespace))  # fmt: skip
            if self.outside != self._outside_of(site):  # the root namespace's OUTSIDE over the site's own link
                _must(_ip("route", "add", f"{self.outside}/32", "via", self._outside_of(site),
                          "src", self.address(site), netns=namespace))  # fmt: skip

    def remove(self) -> None:
        """Idempotent: the namespaces (their veths and rules go with them) and the root ends."""
        for site in SITES:
            _ip("netns", "del", self.netns(site))
            _ip("link", "del", self._veth(site, "o"))  # gone with its peer already, unless half built

    def cut(self) -> None:
        """The inter-site link goes silent: every packet arriving on it is dropped, at both ends."""
        for site in SITES:
            self._iptables(site, "-I")

    def mend(self) -> None:
        for site in SITES:
            with contextlib.suppress(LabError):  # idempotent: a link not cut is mended
                while True:
                    self._iptables(site, "-D")

    def _iptables(self, site: str, action: str) -> None:
        _must(subprocess.run(
            ["ip", "netns", "exec", self.netns(site), "iptables", "-w", "5", action, "INPUT",
             "-i", self._veth(site, "x"), "-j", "DROP"],
            capture_output=True, text=True, check=False, timeout=10,
        ))  # fmt: skip

    def is_cut(self) -> bool:
        result = subprocess.run(
            ["ip", "netns", "exec", self.netns(SITES[0]), "iptables", "-w", "5", "-C", "INPUT",
             "-i", self._veth(SITES[0], "x"), "-j", "DROP"],
            capture_output=True, text=True, check=False, timeout=10,
        )  # fmt: skip
        return result.returncode == 0

    def reaches(self, site: str, host: str, port: int, timeout: float = 1.0) -> bool:
        """Can a TCP connection be made from inside a site's namespace to host:port?"""
        probe = (
            "import socket,sys\n"
            "try:\n"
            f"    socket.create_connection(({host!r}, {port}), timeout={timeout}).close()\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )
        result = subprocess.run(
            ["ip", "netns", "exec", self.netns(site), "python3", "-c", probe],
            capture_output=True, check=False, timeout=timeout + 10,
        )  # fmt: skip
        return result.returncode == 0

    def root_reaches(self, site: str, port: int) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((self.address(site), port), timeout=1.0):
            return True
        return False


def sweep() -> list[str]:
    """Remove the namespaces left by lab instances whose process is gone (named ...-<pid>-<site>)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False, timeout=10)
    removed = []
    for line in listed.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        instance, _, site = name.removeprefix(PREFIX).rpartition("-")
        pid = instance.rpartition("-")[2]
        if name.startswith(PREFIX) and site in SITES and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            SplitSites(instance).remove()
            removed.append(name)
    return removed
