"""Development tooling, never imported by the services: local Redis servers (``cluster``) on
free ports (``ports``), local stacks of service processes (``stack``) and
``channels-fleet dev`` (``command``)."""
