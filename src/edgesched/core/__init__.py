"""The pure scheduling core: task and device state, strategies, retries. No I/O, no event loop."""
