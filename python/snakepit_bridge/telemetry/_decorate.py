"""``telemetry.span`` as a decorator: one span per call of the function.

Kept apart from the span classes so the context-manager path (``__enter__``
/ ``__exit__``) stays as it was: decorating only adds their ``__call__``.
``span_cls`` is ``telemetry.span``: a span that records nothing (its
``_ctx`` is None) is never made current.

A plain function or a coroutine function runs inside ``with span(...)``.
A generator (sync or async) is one span from its first item to its end
(exhaustion, an exception, or ``close``, which counts as a stop): the span
is current only while the generator runs, never in the consumer between
items. An exception the consumer throws in ends the span as an exception;
the wrapped generator is closed whichever way the wrapper ends. Values sent
in (``send``) are not passed on: the wrapper iterates.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping, Optional

from ._context import span_var


def decorate(fn: Callable, span_cls: Callable, name: str,
             metadata: Optional[Mapping[str, Any]],
             correlation_id: Optional[str]) -> Callable:
    """Wrap ``fn`` (function, coroutine function or generator function) so
    each call is one ``span_cls(name, metadata, correlation_id)``."""
    if not callable(fn):
        raise TypeError(
            f"telemetry.span({name!r}) decorates a function; got {type(fn).__name__}"
        )

    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def agen_wrapper(*args, **kwargs):
            s = _opened(span_cls(name, metadata, correlation_id))
            agen = fn(*args, **kwargs)
            try:
                while True:
                    token = _current(s)
                    try:
                        item = await agen.__anext__()
                    finally:
                        _restore(token)
                    yield item
            except StopAsyncIteration:
                _close(s, None)
            except GeneratorExit:
                _close(s, None)
                raise
            except BaseException as e:
                _close(s, e)
                raise
            finally:
                await agen.aclose()

        return agen_wrapper

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            s = _opened(span_cls(name, metadata, correlation_id))
            gen = fn(*args, **kwargs)
            try:
                while True:
                    token = _current(s)
                    try:
                        item = next(gen)
                    finally:
                        _restore(token)
                    yield item
            except StopIteration:
                _close(s, None)
            except GeneratorExit:
                _close(s, None)
                raise
            except BaseException as e:
                _close(s, e)
                raise
            finally:
                gen.close()

        return gen_wrapper

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def coro_wrapper(*args, **kwargs):
            with span_cls(name, metadata, correlation_id):
                return await fn(*args, **kwargs)

        return coro_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with span_cls(name, metadata, correlation_id):
            return fn(*args, **kwargs)

    return wrapper


def _opened(s):
    """Emit the span's start without leaving it current."""
    s.__enter__()
    if s._ctx is not None:
        span_var.reset(s._token)
    return s


def _current(s):
    """Make the span current (a token for ``_restore``); None for a span
    that records nothing, which is never current."""
    ctx = s._ctx
    return None if ctx is None else span_var.set(ctx)


def _restore(token) -> None:
    if token is not None:
        span_var.reset(token)


def _close(s, exc: Optional[BaseException]) -> None:
    """Emit the span's stop (``exc`` None) or exception event."""
    # __exit__ restores the context its token names: make it current again.
    if s._ctx is not None:
        s._token = span_var.set(s._ctx)
    if exc is None:
        s.__exit__(None, None, None)
    else:
        s.__exit__(type(exc), exc, exc.__traceback__)
