"""Background jobs: objects in this process that drive the hardware and speak the MQTT contract."""
