"""Developer tools (local cluster, benchmark support); not part of the appliance package."""
