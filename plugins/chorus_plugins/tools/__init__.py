"""Built-in tool drivers (entry point group ``chorus.tools``).

* ``http`` (:class:`HttpTool`): a declarative HTTP action on a configured URL template.
* ``fetch_url`` (:class:`FetchUrlTool`): the readable text of a web page.
* ``calculator`` (:class:`CalculatorTool`): arithmetic parsed safely, never evaluated as Python.
* ``current_time`` (:class:`CurrentTimeTool`): the current date and time in a time zone.

Every outbound request goes through the skillset's egress-guarded client (``ctx.http``). The
modules are not imported here, so each entry point loads (or fails) on its own.
"""
