"""Hook specifications: the contract between Chorus and its plugins.

Once at startup, :func:`request_fields` collects the request fields plugins own. Every request
then runs through these hooks in this order::

    resolve_target -> build_system_prompt -> retrieve_context -> list_tools
        -> [model call -> run_tools]* -> post_process

Calling convention (decided once for all hooks): pluggy is synchronous, so an implementation may be
a plain function *or* return an awaitable (an ``async def`` implementation returns a coroutine);
Chorus awaits every awaitable result before using it. The exception is :func:`resolve_target`,
which stops at the first non-``None`` result, and :func:`request_fields`, which runs once at
startup; both must be synchronous: registering an ``async def`` implementation of either is
reported as a plugin failure. Implementations may accept any subset
of the arguments, by name. Hooks that collect results receive them in pluggy's call order
(``tryfirst``/``trylast``, then last-registered first).

This module is the hook reference: ``docs/hooks.md`` is generated from these docstrings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chorus.contract.markers import hookspec

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from chorus.contract.context import Registry, RequestContext, Source, Target, Workspace
    from chorus.contract.fields import RequestField


# ---------------------------------------------------------------------------------------------
# Startup
# ---------------------------------------------------------------------------------------------


@hookspec
def request_fields() -> list[RequestField] | None:
    """Declare the extra request body fields this plugin reads.

    Return a list of :class:`~chorus.contract.fields.RequestField` (public path:
    ``chorus.fields``) or ``None``. Called once when the app is built, never per request; must be
    synchronous. Declared fields are decoded with the request into their declared type (a value of
    the wrong type is a 400 naming the field), read by any hook as ``ctx.field("<name>")``
    (``None`` when the client did not send it) and never forwarded upstream. Declaring a field the
    OpenAI schema already has, or one another plugin declared, stops startup with an error naming
    the plugin.
    """


# ---------------------------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def resolve_target(selector: str, workspace: Workspace, registry: Registry) -> Target | None:
    """Resolve the request's ``model`` selector to a :class:`~chorus.targets.Target`.

    :param selector: The ``model`` string exactly as the client sent it.
    :param workspace: The caller's workspace (from its API key).
    :param registry: Providers, workspaces and bots; look bots up with
        ``registry.bot(workspace.id, bot_id)`` so another tenant's bot stays invisible.

    Return ``None`` for selectors you do not own. Stops at the first non-``None`` result; must be
    synchronous. The built-in grammar (``model/name=``, ``bot/id=``) is implemented with
    ``trylast=True``, so a plugin can add selector kinds or override them. If nothing resolves, the
    client receives 404 ``model_not_found``.
    """


# ---------------------------------------------------------------------------------------------
# Prompt assembly
# ---------------------------------------------------------------------------------------------


@hookspec
def build_system_prompt(ctx: RequestContext) -> str | list[str] | Awaitable[str | list[str] | None] | None:
    """Contribute text to the system prompt of this request.

    :param ctx: The request context; ``ctx.target`` is resolved (``ctx.target.bot`` is set for
        ``bot/id=`` targets).

    Return a string, a list of strings, ``None`` (nothing to add), or an awaitable of those. For a
    bot the upstream receives one leading system message: the backstory, then these parts in hook
    call order, then retrieved sources, then the request's own system/developer text. For a plain
    model, parts (if any) form a leading system message and the request's messages follow
    unchanged. See ``docs/layering.md``.
    """


@hookspec
def retrieve_context(ctx: RequestContext) -> list[Source] | Awaitable[list[Source] | None] | None:
    """Retrieve sources the answer may use and cite.

    :param ctx: The request context (read ``ctx.request.messages`` for the conversation).

    Return a list of :class:`~chorus.context.Source` (or an awaitable of one) or ``None``. All
    implementations run concurrently; their sources are appended to ``ctx.sources`` in hook call
    order and rendered into the system prompt as a numbered list ``[1]``, ``[2]``, ... after the
    ``build_system_prompt`` parts.
    """


# ---------------------------------------------------------------------------------------------
# Tools and the agent loop
# ---------------------------------------------------------------------------------------------


@hookspec
def list_tools(ctx: RequestContext) -> list[dict[str, Any]] | Awaitable[list[dict[str, Any]] | None] | None:
    """Declare server-side tools for this request, in the OpenAI ``tools`` shape.

    :param ctx: The request context.

    Return a list of ``{"type": "function", "function": {...}}`` dicts (or an awaitable of one) for
    tools your plugin will execute in :func:`run_tools`, or ``None``. They are offered to the model
    next to the client's own tools; the client never sees them or their calls.
    """


@hookspec
def run_tools(
    ctx: RequestContext, tool_calls: list[dict[str, Any]]
) -> dict[str, str] | Awaitable[dict[str, str] | None] | None:
    """Execute the server-side tool calls this plugin owns.

    :param ctx: The request context.
    :param tool_calls: The model's ``tool_calls`` of one assistant turn (OpenAI shape, arguments
        as a JSON string).

    Return ``{tool_call_id: result_text}`` for the calls you executed (or an awaitable of it), or
    ``None``. All implementations run concurrently. When every call of the turn has a result, the
    results are appended as ``tool`` messages and the model is called again, up to
    ``server.max_tool_steps`` times; a call nobody executed is returned to the client as a normal
    client tool call. Report tool failures as result text; raising fails the request.
    """


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


@hookspec
def post_process(ctx: RequestContext, payload: dict[str, Any], chunk: bool) -> Awaitable[None] | None:
    """Inspect or rewrite the response before the client receives it.

    :param ctx: The request context (``ctx.sources``, ``ctx.usage`` are final for non-stream).
    :param payload: A ``chat.completion`` dict, or one ``chat.completion.chunk`` dict when
        streaming. Mutate it in place; the return value is ignored (an awaitable is awaited).
    :param chunk: ``True`` when ``payload`` is a stream chunk. Chunks arrive in order; the chunk
        carrying ``finish_reason`` is the last one with choices.

    Called once per non-stream response and once per relayed stream chunk, after Chorus has set
    ``id``, ``created`` and ``model`` (the client's selector).
    """
