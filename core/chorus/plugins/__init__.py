"""Plugin loading: the only package that touches pluggy and stevedore."""
