"""Routing policy: where a 112 call goes. Pure functions over frozen data, no I/O."""
