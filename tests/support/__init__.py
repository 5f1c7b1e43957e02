"""What the test suites share: the test projects as process stacks (on
``channels_fleet.dev.stack.FleetStack``), the rolling-restart load, and a loopback fleet (a
Gateway and Hosts over an in-process layer) for fast tests of claims, re-homing and hand-back.

Importable as ``support`` (pyproject.toml puts ``tests/`` on pytest's ``pythonpath``).
"""
