"""Where the lab's sites listen (lab.lab.Layout): on loopback unless drill 6 puts each site in a
network namespace of its own (lab/netns.py), whose names and addresses must fit Linux's limits and
keep parallel labs and the two sites apart."""

from __future__ import annotations

import ipaddress

from lab import lab, netns
from lab.processes import LOOPBACK, Place


def test_the_default_layout_is_loopback_in_this_namespace_with_the_trunk_on_its_own_addresses() -> None:
    layout = lab.Layout()

    assert [layout.sites[site] for site in lab.SITES] == [Place(LOOPBACK, None)] * 2
    assert {site: layout.intersite(site) for site in lab.SITES} == lab.INTERSITE_ADDRESSES
    assert (layout.witness, layout.carrier) == (Place(LOOPBACK, None), lab.CARRIER_ADDRESS)
    assert Place().command(["redis-server"]) == ["redis-server"]


def test_a_split_layout_puts_each_site_on_its_address_in_its_namespace_and_the_rest_outside() -> None:
    split = netns.SplitSites("drill-6-link-cut-4242")
    layout = lab.split_layout(split)

    for site in lab.SITES:
        assert layout.sites[site] == Place(split.address(site), split.netns(site))
        assert layout.intersite(site) == split.address(site)  # the partner knows the trunk by the site's address
        assert layout.sites[site].command(["sipp"]) == ["ip", "netns", "exec", split.netns(site), "sipp"]
    assert layout.witness == Place(split.outside, None)
    assert layout.carrier == split.outside


def test_the_split_sites_names_fit_linux_and_their_addresses_are_private_and_apart() -> None:
    split = netns.SplitSites("drill-6-link-cut-4242")
    names = [split._veth(site, end) for site in lab.SITES for end in "rox"]

    assert all(len(name) <= 15 for name in names)  # IFNAMSIZ
    assert len(set(names)) == len(names)
    addresses = [split.address("jena"), split.address("gera"), split.outside]
    assert len(set(addresses)) == 3
    assert all(ipaddress.ip_address(address).is_private for address in addresses)
    assert split.netns("jena") == "v112-drill-6-link-cut-4242-jena"
    assert netns.SplitSites("another").tag != split.tag  # parallel labs: other veths
