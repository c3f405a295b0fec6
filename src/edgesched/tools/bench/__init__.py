"""``edgesched bench``: benchmarks run on purpose, each printing one JSON object."""
