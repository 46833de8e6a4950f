"""Structured outputs: OpenAI's `response_format` ({"type": "json_object"} or {"type": "json_schema", ...}) and the
tool-call grammar of server/tools.py, checked and turned into the grammar that constrains decoding (llguidance,
generation/grammar.py). Every schema is checked against its JSON Schema meta-schema first, so a malformed one is a
400 naming the field, never an engine failure.
"""

from collections.abc import Callable

import jsonschema

from lmforge.generation.grammar import GrammarError, check_grammar, inline_json, json_schema_grammar, lark_grammar
from lmforge.server.protocol import OpenAIError, ResponseFormat

JSON_OBJECT = {"type": "object"}


def checked_schema(schema, param: str) -> dict | bool:
    """`schema` if it is a valid JSON schema (its own `$schema` draft, else 2020-12), else a 400 naming `param`."""
    if not isinstance(schema, dict | bool):
        raise OpenAIError(400, f"{param} must be a JSON schema (an object), got {type(schema).__name__}", param=param)
    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "the top level"
        raise OpenAIError(400, f"{param} is not a valid JSON schema: {err.message[:200]} (at {where})",
                          param=param) from None
    except Exception as err:  # noqa: BLE001 - RecursionError, an unknown $schema...: the client's schema is unusable
        raise OpenAIError(400, f"{param} is not a usable JSON schema: {type(err).__name__}: {str(err)[:200]}",
                          param=param) from None
    return schema


def response_schema(response_format: ResponseFormat | None) -> dict | bool | None:
    """The JSON schema that the answer must follow, or None for free text."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return JSON_OBJECT
    spec = response_format.json_schema
    if spec is None:
        raise OpenAIError(400, "response_format of type 'json_schema' needs a 'json_schema' object with a 'name' "
                               "and a 'schema'", param="response_format.json_schema")
    if spec.schema_ is None:  # OpenAI: no schema means any JSON object
        return JSON_OBJECT
    return checked_schema(spec.schema_, "response_format.json_schema.schema")


def compile_grammar(build: Callable[[], str], served, param: str) -> str:
    """The grammar `build()` makes, once llguidance has compiled it against the served tokenizer; a 400 naming
    `param` if it cannot (a schema keyword it does not implement, a schema no document satisfies...)."""
    try:
        grammar = build()
        check_grammar(grammar, served.tokenizer, served.vocab_size, served.stop_token_ids)
    except GrammarError as err:
        raise OpenAIError(400, f"{param}: {err}", param=param) from None
    return grammar


def schema_grammar(schema) -> str:
    return json_schema_grammar(schema)


def lark(text: str) -> str:
    return lark_grammar(text)


__all__ = ["checked_schema", "compile_grammar", "inline_json", "lark", "response_schema", "schema_grammar"]
