"""Site services: the loops that run beside launchers (the elastic queue, lease recovery)."""
