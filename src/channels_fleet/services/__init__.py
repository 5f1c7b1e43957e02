"""The processes ``channels-fleet`` runs: ``interface`` (Daphne), ``worker``, ``web``
(gunicorn); each turns flags and environment into its settings and wires signals and drain."""
