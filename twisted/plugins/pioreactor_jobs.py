"""The built-in jobs and automations, found like any third-party one (see pioreactor_appliance.jobs.registry)."""

from pioreactor_appliance.jobs.led_automation import LightDarkCycle, Silent  # noqa: F401
from pioreactor_appliance.jobs.led_intensity import LedIntensity  # noqa: F401
from pioreactor_appliance.jobs.monitor import Monitor  # noqa: F401
from pioreactor_appliance.jobs.stirring import Stirring  # noqa: F401
