"""Overflow policy between the Jena and Gera queues (pure functions over frozen data).

Until the overflow issue lands, the dialplan's static overflow is the only
one: a caller leaves the local queue for the partner when no dispatcher is
available or none answered within ``local_wait_s`` (asterisk-config).
"""
