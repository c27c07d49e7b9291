"""Adapters: a class whose ``@tool`` methods the worker exposes.

    from snakepit_bridge import BaseAdapter, tool

    class MyAdapter(BaseAdapter):
        def __init__(self):
            self.model = load_model()      # loaded once per worker

        @tool(description="Perform inference")
        def inference(self, input_data: str) -> dict:
            ...

The worker creates ONE instance of the adapter class per worker process and
uses it for every call, so an adapter can keep expensive state (a loaded
model, a connection pool). Sync tools run in a thread pool (several may run at
once: guard shared state accordingly); async tools run on the worker's event
loop. A streaming tool (``supports_streaming=True``) is a generator or async
generator; each yielded value is one chunk.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Union

from . import session as _session

__all__ = ["BaseAdapter", "tool", "ToolSpec"]

_TOOL_ATTR = "__snakepit_tool__"


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    supports_streaming: bool
    inline: bool


@dataclass
class BoundTool:
    spec: ToolSpec
    fn: Callable[..., Any]
    is_async: bool
    is_async_gen: bool
    is_gen: bool


def tool(
    fn: Union[Callable, str, None] = None,
    *,
    description: str = "",
    supports_streaming: Optional[bool] = None,
    name: Optional[str] = None,
    inline: bool = False,
):
    """Mark an adapter method as a tool: ``@tool``, ``@tool("description")``
    or ``@tool(description=..., ...)``.

    ``description``: shown by Describe. ``supports_streaming``: the tool is a
    (sync or async) generator whose items are chunks (inferred from the function
    when not given). ``name``: tool name (default: the method name).
    ``inline=True`` (sync tools only): the tool is trivial and never blocks, so
    it runs directly on the event loop instead of in the thread pool, saving a
    thread hop per call.
    """

    def mark(f: Callable) -> Callable:
        gen = inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f)
        streaming = gen if supports_streaming is None else bool(supports_streaming)
        spec = ToolSpec(
            name=name or f.__name__,
            description=description or (inspect.getdoc(f) or "").split("\n")[0],
            supports_streaming=streaming,
            inline=inline,
        )
        setattr(f, _TOOL_ATTR, spec)
        return f

    if isinstance(fn, str):
        if description:
            raise TypeError(
                f"@tool got the description twice ({fn!r} and description={description!r});"
                " give it once"
            )
        description = fn
    elif fn is not None:
        if not callable(fn):
            raise TypeError(
                f"@tool takes a function or a description string; got {type(fn).__name__}"
            )
        return mark(fn)
    return mark


class BaseAdapter:
    """Base class for adapters. Subclasses define ``@tool`` methods."""

    def session_state(self) -> Dict[str, Any]:
        """The state dict of the current call's session (a call made with
        ``Pool::execute_in_session``), kept in this worker between the
        session's calls; see ``snakepit_bridge.session.state``. Raises
        ``RuntimeError`` in a call without a session."""
        return _session.state()

    def tools(self) -> Dict[str, BoundTool]:
        """Name -> bound tool, for every ``@tool`` method of this instance."""
        out: Dict[str, BoundTool] = {}
        for klass in reversed(type(self).__mro__):
            for attr, val in vars(klass).items():
                spec = getattr(val, _TOOL_ATTR, None)
                if spec is None:
                    continue
                bound = getattr(self, attr)
                f = val
                out[spec.name] = BoundTool(
                    spec=spec,
                    fn=bound,
                    is_async=inspect.iscoroutinefunction(f),
                    is_async_gen=inspect.isasyncgenfunction(f),
                    is_gen=inspect.isgeneratorfunction(f),
                )
        return out

    def tool_specs(self) -> List[ToolSpec]:
        return sorted((t.spec for t in self.tools().values()), key=lambda s: s.name)
