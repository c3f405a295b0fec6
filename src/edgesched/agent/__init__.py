"""The agent: runs on a board, dials the master, runs tasks on a backend, returns results."""
