"""Request fields a plugin owns.

OpenAI clients send vendor knobs in the request body (Perplexity's ``search_domain_filter``, a
gateway's ``return_citations``). A plugin that reads such a field declares it through the
``request_fields`` hook; Chorus then decodes it together with the request (once, with msgspec, into
the declared type; a wrong type is a 400 naming the field), exposes it as
``ctx.field("<name>")`` and never forwards it upstream. Undeclared unknown fields are ignored, as
before.
"""

from __future__ import annotations

from typing import Any

import msgspec


class RequestField(msgspec.Struct, frozen=True, kw_only=True):
    """One extra top-level field of a ``POST /v1/chat/completions`` body.

    :param name: The JSON key. It must not be an OpenAI parameter Chorus already maps, nor a field
        another plugin declared (both are startup errors naming the plugin).
    :param type: What msgspec decodes it into, e.g. ``list[str] | None``; make it lenient
        (``dict[str, Any]``) unless a wrong type should really be a 400.
    :param doc: One line for ``chorus plugins`` and the docs.
    """

    name: str
    type: Any
    doc: str = ""
