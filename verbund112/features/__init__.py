"""The features of one site's service, each given what it needs by constructor.

routing_service (FastAGI route handler), screen_pops (call ledger + driver),
overflow_mover (driver over overflow.moves), aml_polls (the AML pull),
partner_watch (the partner's liveness), rules_admin (reload, upload, audit).
They talk to each other only through the event hub (hub.py) and the seams
they are given; none of them imports another's module except for its types.
"""
