"""The built-in jobs and automations, found like any third-party one (see pioreactor_appliance.jobs.registry)."""

from pioreactor_appliance.jobs.dosing_automation import Chemostat, FedBatch, Silent, Turbidostat  # noqa: F401
from pioreactor_appliance.jobs.pumps import AddAltMedia, AddMedia, CirculateAltMedia, CirculateMedia, RemoveWaste  # noqa: F401
