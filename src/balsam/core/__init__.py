"""Balsam 0.x import paths, kept so existing scripts run: see :mod:`balsam.core.models`."""
