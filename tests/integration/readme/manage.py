#!/usr/bin/env python
"""The README's "Your own project" steps run in this directory (tests/integration/test_readme_steps.py)."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
