"""Stand-ins for the tests and the bench: an AGI client playing Asterisk, an AML server."""
