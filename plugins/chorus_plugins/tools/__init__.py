"""Built-in tool drivers (entry point group ``chorus.tools``).

* ``http`` (:class:`HttpTool`): a declarative HTTP action on a configured URL template.
* ``fetch_url`` (:class:`FetchUrlTool`): the readable text of a web page.
* ``calculator`` (:class:`CalculatorTool`): arithmetic parsed safely, never evaluated as Python.
* ``current_time`` (:class:`CurrentTimeTool`): the current date and time in a time zone.

Every outbound request goes through the skillset's egress-guarded client (``ctx.http``).
"""

from chorus_plugins.tools.calculator import CalculatorTool
from chorus_plugins.tools.current_time import CurrentTimeTool
from chorus_plugins.tools.fetch_url import FetchUrlTool
from chorus_plugins.tools.http import HttpTool

__all__ = ["CalculatorTool", "CurrentTimeTool", "FetchUrlTool", "HttpTool"]
