"""``edgesched chaos``: a repeatable chaos run graded by an independent ledger (see ``cli``)."""
