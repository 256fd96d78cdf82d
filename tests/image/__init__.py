"""The SD-card image builder's checks that run in every CI run (image/, systemd/ scripts)."""
