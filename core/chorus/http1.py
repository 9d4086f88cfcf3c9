"""Public import path. The pooled HTTP/1.1 client provider drivers use for the upstream hop.

The definitions live in :mod:`chorus.net.http1`; plugins import them from here."""

from chorus.net.http1 import (
    ConnectError,
    ConnectionLost,
    HTTPError,
    HTTPPool,
    PoolClosed,
    RemoteProtocolError,
    RequestTimeout,
    Response,
    ResponseTooLarge,
)

__all__ = ['ConnectError', 'ConnectionLost', 'HTTPError', 'HTTPPool', 'PoolClosed', 'RemoteProtocolError', 'RequestTimeout',
           'Response', 'ResponseTooLarge']
