"""``ciba-service demo``: the whole flow in embedded mode on loopback (``run``), against a small
example resource server (``example_api``)."""
