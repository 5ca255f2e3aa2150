"""WebSocket side: handshake checks, Autobahn protocol and factory."""
