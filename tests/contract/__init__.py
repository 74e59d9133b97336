"""SessionStore contract suite: one behaviour, every backend."""
