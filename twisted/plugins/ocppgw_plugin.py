from twisted.application.service import ServiceMaker

ocppgw = ServiceMaker("OCPP 1.6-J gateway", "ocppgw.tap", "OCPP-J WebSocket <-> MQTT gateway", "ocppgw")
