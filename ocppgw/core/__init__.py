"""Sans-IO OCPP-J: codec, schemas, per-charge-point session state."""
