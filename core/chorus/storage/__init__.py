"""Storage: the SQLite plumbing, the Files/Vector Stores catalog and the parked-turn stores."""
