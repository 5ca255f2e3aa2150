"""OCPP 1.6-J over WebSocket <-> MQTT gateway."""
