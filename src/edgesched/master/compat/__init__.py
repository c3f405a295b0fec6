"""The seed system's protocols, served by the master for its unchanged clients."""
