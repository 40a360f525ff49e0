"""Conformance scenarios. `nfsconf run` is the front door; plain pytest works too, as a
kernel developer would type it:

    pytest scenarios/ -k DEC-COLD --nfsconf-profile bindfs --nfsconf-out /tmp/run

The nfsconf plugin provides the `cell` fixture (nfsconf/scenario.py) and the profile and
transport parametrization; without --nfsconf-out nothing is recorded, the verdicts are
pytest's."""

pytest_plugins = ["nfsconf.plugin"]
