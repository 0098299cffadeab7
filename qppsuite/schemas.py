"""JSON Schemas of the files users hand to qppsuite (image manifests, recordings), and checking against them.

The schemas are JSON files beside the code that reads each format
(``qppsuite/images/manifest.schema.json``, ``qppsuite/recording.schema.json``).
jsonschema, a maintained validator, does the checking, so every bad field of
every format gets the same kind of one-line message.
"""

import json
from functools import cache
from pathlib import Path
from typing import Any


@cache
def load_schema(path: Path) -> dict[str, Any]:
    """The schema at ``path`` (package data, read once)."""
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def schema_problem(document: object, schema: dict[str, Any]) -> str | None:
    """The first way ``document`` breaks ``schema``, as ``field/path: message`` (one line), or None."""
    import jsonschema  # only loaders of user files need it: not paid at every start-up

    try:
        error = jsonschema.exceptions.best_match(_validator()(schema).iter_errors(document))
    except RecursionError:
        return "the top level: nested too deeply"
    if error is None:
        return None
    # keys are the file's own text: a newline in one must not break the one line
    where = "/".join(str(part) for part in error.absolute_path).encode("unicode_escape").decode("ascii")
    where = where or "the top level"
    message = " ".join(error.message.split())
    # a long value quoted in the message is cut in its middle: what is wrong with it is said at the end
    return f"{where}: {message if len(message) <= 200 else message[:120] + ' … ' + message[-80:]}"


@cache
def _validator() -> Any:
    """Draft 2020-12, except that an integer is an integer: JSON Schema counts 256.0 as one, and the code that
    reads the file does not (``256.0 << 20`` fails)."""
    import jsonschema

    checker = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=checker)
