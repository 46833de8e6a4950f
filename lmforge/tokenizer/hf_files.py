"""Read and write the Hugging Face tokenizer directory: tokenizer.json, tokenizer_config.json, chat_template.jinja.

Reading follows transformers' rules (tokens as strings or `{"content": ...}` dicts, special_tokens_map.json,
chat templates in the config, as named lists, or in chat_template.jinja, which wins); writing produces a directory
`transformers.AutoTokenizer.from_pretrained` loads as a PreTrainedTokenizerFast that encodes exactly like ours.
"""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import AddedToken
from tokenizers import Tokenizer as Backend

from lmforge.common.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.tokenizer.tokenizer import Tokenizer

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
SPECIAL_ROLES = ("bos_token", "eos_token", "pad_token", "unk_token")
# transformers' stand-in for "no limit" (int(1e30)); written when the tokenizer has no model_max_length.
NO_MAX_LENGTH = int(1e30)


def read_hf_dir(path: Path) -> tuple[Backend, dict[str, Any]]:
    """The backend and the keyword arguments for `Tokenizer(...)` stored in a Hugging Face tokenizer directory."""
    if not path.exists():
        raise LmforgeError(f"tokenizer directory not found: {path}")
    if not path.is_dir():
        raise LmforgeError(f"{path} is not a directory; use Tokenizer.from_file for a bare tokenizer.json")
    tokenizer_file = path / TOKENIZER_FILE
    if not tokenizer_file.is_file():
        raise LmforgeError(f"no {TOKENIZER_FILE} in {path}: lmforge reads only fast (tokenizers) tokenizers")
    try:
        backend = Backend.from_file(str(tokenizer_file))
    except Exception as err:  # the Rust side raises plain Exception for malformed JSON
        raise LmforgeError(f"cannot read {tokenizer_file}: {err}") from None
    config = _read_json(path / CONFIG_FILE)

    roles = {role: _token_content(config.get(role), role, path / CONFIG_FILE) for role in SPECIAL_ROLES}
    # Like transformers: special_tokens_map.json (legacy) overrides the config unless it has added_tokens_decoder.
    if "added_tokens_decoder" not in config:
        special_map = _read_json(path / SPECIAL_TOKENS_MAP_FILE)
        for role in SPECIAL_ROLES:
            if role in special_map:
                roles[role] = _token_content(special_map[role], role, path / SPECIAL_TOKENS_MAP_FILE)
    _add_missing_added_tokens(backend, config.get("added_tokens_decoder") or {}, path / CONFIG_FILE)

    template_file = path / CHAT_TEMPLATE_FILE
    if template_file.is_file():
        chat_template = template_file.read_text(encoding="utf-8")
    else:
        chat_template = _config_chat_template(config.get("chat_template"), path / CONFIG_FILE)

    max_length = config.get("model_max_length")
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length <= 0 or max_length >= 10**20:
        max_length = None
    kwargs = dict(
        roles,
        chat_template=chat_template or None,
        add_bos_token=bool(config.get("add_bos_token", False)),
        add_eos_token=bool(config.get("add_eos_token", False)),
        model_max_length=max_length,
    )
    return backend, kwargs


def write_hf_dir(tokenizer: "Tokenizer", path: Path) -> None:
    """Write tokenizer.json, tokenizer_config.json and (if there is a template) chat_template.jinja into `path`."""
    if path.exists() and not path.is_dir():
        raise LmforgeError(f"cannot save the tokenizer into {path}: it is a file, not a directory")
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.backend.save(str(path / TOKENIZER_FILE), pretty=True)
    added = {
        str(i): {
            "content": t.content,
            "lstrip": t.lstrip,
            "normalized": t.normalized,
            "rstrip": t.rstrip,
            "single_word": t.single_word,
            "special": t.special,
        }
        for i, t in sorted(tokenizer.backend.get_added_tokens_decoder().items())
    }
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "backend": "tokenizers",
        **{role: getattr(tokenizer, role) for role in SPECIAL_ROLES},
        "add_bos_token": tokenizer.add_bos_token,
        "add_eos_token": tokenizer.add_eos_token,
        "added_tokens_decoder": added,
        "clean_up_tokenization_spaces": False,
        "model_max_length": tokenizer.model_max_length or NO_MAX_LENGTH,
    }
    template_file = path / CHAT_TEMPLATE_FILE
    if tokenizer.chat_template is not None:
        # Older transformers read the config key, v5 prefers the .jinja file: write both, identical.
        config["chat_template"] = tokenizer.chat_template
        template_file.write_text(tokenizer.chat_template, encoding="utf-8")
    elif template_file.exists():
        template_file.unlink()  # a stale template from an earlier save would be loaded back
    text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    (path / CONFIG_FILE).write_text(text, encoding="utf-8")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LmforgeError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise LmforgeError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _token_content(value: Any, role: str, source: Path) -> str | None:
    """A special token given as "text" or as {"content": "text", ...} (an AddedToken dump)."""
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"] or None
    raise LmforgeError(f"{source}: {role} must be a string or a {{'content': ...}} object, got {value!r:.100}")


def _config_chat_template(value: Any, source: Path) -> str | None:
    """`chat_template` from the config: a string, or a list of {"name", "template"} of which we take "default"."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {}
        for entry in value:
            if not isinstance(entry, dict) or not isinstance(entry.get("template"), str):
                raise LmforgeError(
                    f"{source}: chat_template entries must be {{'name', 'template'}}, got {entry!r:.100}"
                )
            named[entry.get("name")] = entry["template"]
        return named.get("default")
    raise LmforgeError(f"{source}: chat_template must be a string or a list of named templates, got {value!r:.100}")


def _add_missing_added_tokens(backend: Backend, decoder: dict[str, Any], source: Path) -> None:
    """Tokens the config's added_tokens_decoder lists but tokenizer.json lacks are added, as transformers does."""
    if not isinstance(decoder, dict):
        raise LmforgeError(f"{source}: added_tokens_decoder must be an object of id -> token, got {decoder!r:.100}")
    for _, entry in sorted(decoder.items(), key=lambda item: int(item[0]) if str(item[0]).isdigit() else -1):
        content = entry.get("content") if isinstance(entry, dict) else None
        if not isinstance(content, str):
            raise LmforgeError(f"{source}: added_tokens_decoder entry {entry!r:.100} has no string 'content'")
        if backend.token_to_id(content) is not None:
            continue
        flags = {k: bool(entry[k]) for k in ("lstrip", "rstrip", "single_word", "normalized") if k in entry}
        token = AddedToken(content, special=bool(entry.get("special", False)), **flags)
        if token.special:
            backend.add_special_tokens([token])
        else:
            backend.add_tokens([token])
