"""Shared pytest configuration."""

pytest_plugins = ["emulator.testing"]
