"""Development tooling, never imported by the services: local Redis servers (``cluster``),
local stacks of service processes (``stack``) and ``channels-fleet dev`` (``command``)."""
