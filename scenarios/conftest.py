"""Conformance scenarios. Run them with `nfsconf run`; the nfsconf plugin provides the
profile, transport_name, lab and evidence fixtures."""
