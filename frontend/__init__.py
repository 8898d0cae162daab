"""Packaging marker: the board's static files ship as the package `baton_frontend`, so an
installed baton-dashboard finds them (see pyproject.toml). No code lives here."""
