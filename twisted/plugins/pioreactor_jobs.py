"""The built-in jobs and automations, found like any third-party one (see pioreactor_appliance.jobs.registry).

Twisted collects the IPlugin providers among this module's names, so each
module's job and automation classes are imported here, under names of their own.
"""
# ruff: noqa: F401

from pioreactor_appliance.jobs.dosing_automation import Chemostat, FedBatch, Turbidostat
from pioreactor_appliance.jobs.dosing_automation import Silent as SilentDosing
from pioreactor_appliance.jobs.experiment_profile import ExperimentProfile
from pioreactor_appliance.jobs.growth_rate_calculating import GrowthRateCalculator
from pioreactor_appliance.jobs.led_automation import LightDarkCycle
from pioreactor_appliance.jobs.led_automation import Silent as SilentLed
from pioreactor_appliance.jobs.led_intensity import LedIntensity
from pioreactor_appliance.jobs.monitor import Monitor
from pioreactor_appliance.jobs.od_reading import ODReader
from pioreactor_appliance.jobs.pumps import AddAltMedia, AddMedia, CirculateAltMedia, CirculateMedia, RemoveWaste
from pioreactor_appliance.jobs.stirring import Stirring
from pioreactor_appliance.jobs.temperature_automation import OnlyRecordTemperature, Thermostat
