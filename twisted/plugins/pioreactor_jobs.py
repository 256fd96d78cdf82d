"""The built-in jobs and automations, found like any third-party one (see pioreactor_appliance.jobs.registry)."""

from pioreactor_appliance.jobs import (
    led_automation,  # noqa: F401
    led_intensity,  # noqa: F401
    monitor,  # noqa: F401
    stirring,  # noqa: F401
)
