"""The master: the asyncio shell around the scheduling core (intake, link, gateway, journal)."""
