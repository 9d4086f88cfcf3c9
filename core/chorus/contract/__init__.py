"""The contract plugins see: hook specifications and the types hooks take, driver interfaces,
the configuration schema, the OpenAI wire schemas and the errors.

Layer rule (import-linter, ``pyproject.toml``): nothing here imports the runtime, the HTTP edge,
storage, the command line or the plugin manager. Plugins import these names through the public
top-level modules (``chorus.tools``, ``chorus.search``, ...), which re-export them.
"""
