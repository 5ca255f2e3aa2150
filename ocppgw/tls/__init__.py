"""TLS for both sides: the wss listeners (``listener``) and the broker connection (``broker``)."""
