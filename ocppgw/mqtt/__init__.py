"""MQTT side of the gateway: topic templates and the broker link."""
