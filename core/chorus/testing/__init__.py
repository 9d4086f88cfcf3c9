"""What a plugin author needs to test a plugin end to end; import the submodules.

End to end (a live Chorus on loopback, driven by the official SDK):

* :mod:`chorus.testing.upstream`: :class:`~chorus.testing.upstream.ScriptedUpstream`, a real
  OpenAI-compatible HTTP server whose answers a test scripts (``Reply``, ``Error``, ``Hang``,
  ``Drop``, ``RawStream``, ``RawBody``; ``minimal`` answers without optional fields), recording
  every request;
* :mod:`chorus.testing.server`: :class:`~chorus.testing.server.LiveServer`, any ASGI app on a
  loopback port in a background thread, and ``free_port``;
* :mod:`chorus.testing.config`: ``make_config``, a ready test configuration (workspaces ``acme``
  and ``globex`` with ``ACME_KEY`` / ``GLOBEX_KEY``, providers on the scripted upstream) plus your
  TOML;
* :mod:`chorus.testing.gateway`: the app as ``chorus serve`` builds it, with extra plugins and
  drivers (``make_app``, ``serve``, ``serve_with_plugins``), and drivers and skillsets loaded as
  the app loads them (``load_driver``, ``build_skillsets``);
* :mod:`chorus.testing.fixtures`: the pytest plugin (``pytest_plugins =
  ["chorus.testing.fixtures"]``) with the ``scripted_upstream`` and ``serve_chorus`` fixtures.

Driver kits (no pytest import, explicit checks; use them from any test runner):

* :mod:`chorus.testing.vectorstores`: the conformance kit for vector store drivers;
* :mod:`chorus.testing.search_engines`: the conformance kit for search engine drivers;
* :mod:`chorus.testing.replay`: a server that checks requests against recordings and replays
  the recorded answers;
* :mod:`chorus.testing.offloop`: proof that blocking work runs off the event loop.

Everything here ships in the core wheel and depends on what chorus-gateway installs (the SDK
helper ``LiveServer.openai_client`` needs ``openai``; :mod:`~chorus.testing.fixtures` needs
pytest). Chorus itself never imports this package.
"""
