from twisted.application.service import ServiceMaker

pioreactor = ServiceMaker("Pioreactor appliance", "pioreactor_appliance.tap", "Run one Pioreactor unit (leader or worker)", "pioreactor")
