"""The built-in jobs and automations, found like any third-party one (see pioreactor_appliance.jobs.registry)."""
from pioreactor_appliance.jobs import growth_rate_calculating  # noqa: F401
from pioreactor_appliance.jobs import od_reading  # noqa: F401
