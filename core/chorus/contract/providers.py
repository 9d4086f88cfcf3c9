"""The model provider driver interface (entry point group ``chorus.providers``).

A driver is a class. Chorus builds one instance per ``[[providers]]`` table at startup, passing the
table validated into the driver's :attr:`ProviderDriver.settings_type` (subclass
:class:`ProviderSettings` to add driver-specific keys; unknown keys are config errors). The instance
lives for the whole process: open pooled connections in :meth:`start`, close them in
:meth:`aclose`. The request body is a :class:`~chorus.schemas.ChatCompletionRequest` (encode it with
``msgspec.json.encode``: unset fields are omitted); responses are OpenAI ``chat.completion`` objects
as plain dicts.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import msgspec

from chorus.contract.config import Price
from chorus.contract.retry import FailoverPolicy
from chorus.contract.secrets import Secret
from chorus.net.proxy import Proxy, ProxyURLError, environment_proxies

if TYPE_CHECKING:
    from chorus.contract.context import RequestContext
    from chorus.contract.schemas import ChatCompletionRequest


class ProviderSettings(FailoverPolicy, kw_only=True):
    """Keys every ``[[providers]]`` table may use (with the failover keys of :class:`FailoverPolicy`)."""

    id: str
    driver: str
    base_url: str | None = None
    api_key: Secret | None = None
    models: list[str] = []
    headers: dict[str, str] = {}
    timeout: float = 600.0
    connect_timeout: float = 10.0
    max_connections: int = 512
    # caps on what an upstream may send (502 ``upstream_response_too_large`` beyond): a whole
    # non-streamed body, and one event of a stream
    max_response_bytes: Annotated[int, msgspec.Meta(ge=1)] = 64 * 1024 * 1024
    max_event_bytes: Annotated[int, msgspec.Meta(ge=1)] = 8 * 1024 * 1024
    # USD per million tokens by upstream model name (the cost recorded with every request's usage)
    prices: dict[str, Price] = {}
    #: The HTTP proxy to reach the upstream through: unset, the ``HTTPS_PROXY`` / ``HTTP_PROXY`` /
    #: ``NO_PROXY`` environment (read once at startup); ``""``, none; else ``http://[user:pass@]host:port``.
    #: A secret, as it may carry credentials. :meth:`proxy_for` resolves it for drivers.
    proxy: Secret | None = None

    def __post_init__(self) -> None:
        if self.proxy:
            try:
                Proxy(self.proxy.get())
            except ProxyURLError as exc:
                raise ValueError(f"invalid proxy: {exc}") from None
        if self.retry_backoff_max < self.retry_backoff:
            raise ValueError(
                f"retry_backoff_max ({self.retry_backoff_max:g}) is below retry_backoff ({self.retry_backoff:g})"
            )

    def proxy_for(self, url: str, env: Mapping[str, str]) -> Proxy | None:
        """The proxy to reach ``url`` through: this table's ``proxy``, else ``env``'s variables.

        Call it once, at startup (``env`` is usually :data:`os.environ`). A malformed proxy variable
        raises :class:`ValueError` naming the variable (never its credentials)."""
        if self.proxy is not None:
            return Proxy(self.proxy.get()) if self.proxy else None
        return environment_proxies(env).for_url(url)


class ProviderDriver(abc.ABC):
    """A source of chat completions.

    :meth:`complete` returns one ``chat.completion`` dict; :meth:`stream` yields
    ``chat.completion.chunk`` dicts. Both receive the upstream body (already layered, with the
    upstream model name in ``model``). Failures are raised as :class:`~chorus.errors.UpstreamError`
    and its subclasses, never as transport exceptions.
    """

    settings_type: ClassVar[type[ProviderSettings]] = ProviderSettings

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings

    @property
    def id(self) -> str:
        """The provider id used in selectors."""
        return self.settings.id

    def advertised_models(self) -> list[str]:
        """Model names shown in ``/v1/models`` (``"*"`` entries are never advertised)."""
        return [m for m in self.settings.models if m != "*"]

    def price(self, model: str) -> Price | None:
        """What ``model`` (the upstream name) costs (``prices`` in the provider's table), if configured."""
        prices = self.settings.prices
        return prices.get(model) if prices else None

    def serves(self, model: str) -> bool:
        """Whether a bare model name is served by this provider."""
        return model in self.settings.models or "*" in self.settings.models

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections or load models. Called once before serving."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`start` opened."""

    async def embed(self, inputs: list[str], model: str, *, dimensions: int | None = None) -> dict[str, Any]:
        """Return an OpenAI ``/v1/embeddings`` response dict for ``inputs`` (float vectors).

        Drivers without embeddings keep this default, which answers 400 ``unsupported_model``.
        """
        from chorus.contract.errors import InvalidRequest

        raise InvalidRequest(f"Provider {self.id!r} does not serve embeddings.", code="unsupported_model", param="model")

    @abc.abstractmethod
    async def complete(self, body: ChatCompletionRequest, ctx: RequestContext) -> dict[str, Any]:
        """Run a non-streaming chat completion and return the ``chat.completion`` dict."""

    @abc.abstractmethod
    def stream(self, body: ChatCompletionRequest, ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
        """Run a streaming chat completion, yielding ``chat.completion.chunk`` dicts.

        Raise before the first chunk for errors the upstream reports up front. Closing the iterator
        (client gone) must cancel the upstream work.
        """
