"""The seed system's client tools: the legacy sender and the /recv_rst receiver."""
