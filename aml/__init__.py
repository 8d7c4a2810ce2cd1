"""Advanced Mobile Location (AML, ETSI TS 103 625): handset positions sent by SMS and HTTPS."""
