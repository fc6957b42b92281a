"""Checks a call's args/kwargs against the task's own signature before anything is published.

Tasks declare their parameters with type hints (and pydantic constraints where they matter), so
the API refuses ``add("2", 3)`` or ``sleep(-1)`` with a 422 naming the argument, instead of
publishing a message that can only fail in the worker.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from celery import Task
from pydantic import TypeAdapter, ValidationError

#: Stands in for the argument a workflow step receives from the step before it.
FROM_PREVIOUS_STEP = object()


@dataclass(frozen=True)
class ArgumentProblem:
    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"

    def as_error(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


@dataclass
class TaskSignature:
    task: Task
    _adapters: dict[str, TypeAdapter] = field(default_factory=dict)

    @cached_property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.task.run)

    @cached_property
    def hints(self) -> dict[str, Any]:
        return typing.get_type_hints(self.task.run, include_extras=True)

    def describe(self) -> dict[str, Any]:
        """Parameter names, types and defaults, for ``GET /tasks``."""
        return {
            name: {
                "type": _type_name(self.hints.get(name, Any)),
                **({} if p.default is inspect.Parameter.empty else {"default": p.default}),
            }
            for name, p in self.signature.parameters.items()
        }

    def check(
        self, args: list[Any], kwargs: dict[str, Any], *, receives_previous: bool = False, loc: tuple = ("body",)
    ) -> list[ArgumentProblem]:
        """Problems with calling the task with these arguments (empty list: fine).

        ``receives_previous``: the task is a later workflow step and gets the previous result as
        its first argument, which is not known yet and not checked.
        """
        if unknown := self._unknown_keywords(kwargs, loc):
            # Reported alone: binding would only add a misleading "missing argument" for the
            # parameter the misspelt keyword was meant to be.
            return unknown
        positional = [FROM_PREVIOUS_STEP, *args] if receives_previous else list(args)
        try:
            bound = self.signature.bind(*positional, **kwargs)
        except TypeError as exc:
            return [
                ArgumentProblem(
                    (*loc, "args"), f"arguments do not match {self.task.name}{self.signature}: {exc}", "arguments"
                )
            ]
        offset = 1 if receives_previous else 0
        problems = []
        for index, (name, value) in enumerate(bound.arguments.items()):
            if value is FROM_PREVIOUS_STEP:
                continue
            where = (*loc, "kwargs", name) if name in kwargs else (*loc, "args", index - offset)
            try:
                self._adapter(name).validate_python(value, strict=True)
            except ValidationError as exc:
                first = exc.errors()[0]
                problems.append(ArgumentProblem(where, f"{name}: {first['msg']}", first["type"]))
        return problems

    def _unknown_keywords(self, kwargs: dict[str, Any], loc: tuple) -> list[ArgumentProblem]:
        parameters = self.signature.parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return []
        named = [
            name
            for name, p in parameters.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        ]
        problems = []
        for key in kwargs:
            if key in named:
                continue
            close = difflib.get_close_matches(key, named, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                ArgumentProblem(
                    (*loc, "kwargs", key),
                    f"unknown keyword argument {key!r} for {self.task.name}{self.signature}{hint}; "
                    f"its keyword parameters: {', '.join(named) or 'none'}",
                    "unexpected_keyword_argument",
                )
            )
        return problems

    def _adapter(self, name: str) -> TypeAdapter:
        if name not in self._adapters:
            self._adapters[name] = TypeAdapter(self.hints.get(name, Any))
        return self._adapters[name]


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
