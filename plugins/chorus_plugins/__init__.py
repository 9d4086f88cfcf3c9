"""Built-in plugins, shipped in the core wheel and registered through the public entry points."""
