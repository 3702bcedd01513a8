"""A job's run options as the API takes them: one JSON object, checked strictly.

`JobConfig` is built from pipeline.config.RunConfig's fields, so an option added there reaches
the API by itself; BOUNDS adds each option's allowed range, so the OpenAPI schema states
exactly what is accepted (a client, or a fuzzer generating from the schema, never meets a
refusal the schema did not announce). Strict: no string for a number, no boolean for an
integer, no unknown option. `parse_config` checks both ways in (the multipart form's `config`
string and the JSON body's `config` object), RunConfig's own checks first, so the messages
name the option and its range as the CLI's do.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from app.problems import ProblemError
from pipeline.config import RunConfig

CONFIG_EXAMPLE = {"preset": "quick", "target": 500, "seed": 0}
# Field() arguments per option; the ranges RunConfig.validated() enforces, and for the options
# it leaves open, ranges a run can use (a latent of 0 or a progress step of 0 cannot run).
BOUNDS: dict[str, dict[str, Any]] = {
    "target": {"ge": 1, "le": 1_000_000},
    "gan_iterations": {"ge": 1, "le": 1_000_000},
    "epochs": {"ge": 1, "le": 10_000},
    "seeds": {"ge": 1, "le": 20},
    "seed": {"ge": 0, "le": 2**32 - 1},
    "image_size": {"ge": 8, "le": 128, "multiple_of": 4},
    "test_fraction": {"gt": 0.0, "lt": 1.0},
    "gan_batch": {"ge": 1, "le": 4096},
    "gan_latent": {"ge": 1, "le": 1024},
    "gan_width": {"ge": 8, "le": 256},
    "gan_lr": {"gt": 0.0, "le": 1.0},
    "diffaug_below": {"ge": 0, "le": 1_000_000_000},
    "transfer_below": {"ge": 0, "le": 1_000_000},
    "proxy_worlds": {"ge": 1, "le": 10},
    "transfer_pairs": {"ge": 16, "le": 100_000},
    "transfer_steps": {"ge": 1, "le": 100_000},
    "classifier_batch": {"ge": 1, "le": 4096},
    "classifier_lr": {"gt": 0.0, "le": 1.0},
    "progress_every": {"ge": 1, "le": 1_000_000},
    "synthetic_share": {"ge": 0.0, "le": 1.0},
}


def _job_config_model() -> type[BaseModel]:
    hints = typing.get_type_hints(RunConfig)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(RunConfig):
        default = f.default if f.default is not dataclasses.MISSING else None
        fields[f.name] = (_bounded(hints[f.name], BOUNDS.get(f.name, {})), Field(default))
    return create_model(
        "JobConfig",
        __config__=ConfigDict(
            strict=True,
            extra="forbid",
            json_schema_extra={"example": CONFIG_EXAMPLE},
        ),
        __doc__="Run options (as the CLI's); any left out take their default, and the "
        "preset's values fill the budget options left out or null.",
        **fields,
    )


def _bounded(hint: Any, bounds: dict[str, Any]) -> Any:
    """The option's type with its range on its numbers: `int | None` becomes
    `Annotated[int, Field(ge=.., le=..)] | None`, `float | Literal["auto"]` likewise."""
    if not bounds:
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [_bounded(a, bounds) for a in typing.get_args(hint)]
        return functools.reduce(operator.or_, members)
    if hint is int:  # JSON Schema's integers include 383.0: take a whole float as an int
        return Annotated[int, Field(**bounds), BeforeValidator(_whole_float_to_int)]
    if hint is float:
        return Annotated[hint, Field(**bounds)]
    return hint


def _whole_float_to_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_INT_OPTIONS = {
    f.name
    for f in dataclasses.fields(RunConfig)
    if int in (typing.get_args(typing.get_type_hints(RunConfig)[f.name]) or (None,))
    or typing.get_type_hints(RunConfig)[f.name] is int
}


JobConfig = _job_config_model()


def parse_config(values: Any) -> RunConfig:
    """A run config from the request's options, or a 422 naming the option at fault."""
    if not isinstance(values, dict):
        raise bad_config("config must be a JSON object, e.g. " + str(CONFIG_EXAMPLE))
    # A whole number written as 383.0 is an integer (JSON Schema's reading): the pipeline
    # gets an int, never a float batch size.
    values = {k: _whole_float_to_int(v) if k in _INT_OPTIONS else v for k, v in values.items()}
    try:
        config = RunConfig.from_dict(values)
    except ValueError as exc:
        raise bad_config(str(exc)) from None
    except TypeError as exc:  # e.g. a string where a number belongs
        raise bad_config(f"config has a value of the wrong type ({exc})") from None
    try:
        JobConfig.model_validate(values)
    except ValidationError as exc:
        raise bad_config("; ".join(_error_text(e) for e in exc.errors())) from None
    return config


def _error_text(error: Any) -> str:
    where = ".".join(str(p) for p in error.get("loc", ())) or "config"
    return f"{where}: {error.get('msg', 'invalid')}"


def bad_config(detail: str) -> ProblemError:
    return ProblemError(422, "invalid-config", "Invalid config", detail)
