"""The built-in jobs and automations, found like any third-party one (see pioreactor_appliance.jobs.registry).

Twisted collects the IPlugin providers among this module's names, so each
module's job and automation classes are imported here.
"""
# ruff: noqa: F401

from pioreactor_appliance.jobs.dosing_automation import Chemostat, FedBatch, Silent, Turbidostat
from pioreactor_appliance.jobs.pumps import AddAltMedia, AddMedia, CirculateAltMedia, CirculateMedia, RemoveWaste
from pioreactor_appliance.jobs.temperature_automation import OnlyRecordTemperature, Thermostat
