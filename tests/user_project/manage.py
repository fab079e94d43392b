#!/usr/bin/env python
"""A small Django project using django-mailrouter as a user would, for the
suite to run ``manage.py test`` and pytest-django against (tests/test_user_project.py)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
