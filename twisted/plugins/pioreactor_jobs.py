"""The built-in jobs and automations, found like any third-party one (see pioreactor_appliance.jobs.registry)."""

from pioreactor_appliance.jobs.temperature_automation import (  # noqa: F401
    OnlyRecordTemperature,
    Thermostat,
)
