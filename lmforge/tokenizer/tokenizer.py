"""The lmforge Tokenizer: a Hugging Face `tokenizers` backend plus special-token roles and a chat template.

It reads and writes the Hugging Face tokenizer directory (`tokenizer.json`, `tokenizer_config.json`,
`chat_template.jinja`) so that `transformers.AutoTokenizer` and lmforge load the same files and agree on every id.
"""

import operator
import os
import re
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, processors
from tokenizers import Tokenizer as Backend

from lmforge.common.errors import LmforgeError
from lmforge.tokenizer.chat_template import render_chat_template
from lmforge.tokenizer.hf_files import SPECIAL_ROLES, read_hf_dir, write_hf_dir
from lmforge.tokenizer.safe_chat import (
    Escaper,
    control_strings,
    encode_plain_pieces,
    encode_rendered,
    plain_backend,
)

# Ids are u32 in the Rust backend.
_MAX_ID = 2**32


class Tokenizer:
    """Text <-> token ids, with BOS/EOS handling, vocabulary expansion and chat templates.

    `backend` is the `tokenizers.Tokenizer` doing the work. A named special token (bos/eos/pad/unk) missing from
    its vocabulary is added as a special token, as transformers does. `add_bos_token` / `add_eos_token` install a
    post-processor on the backend that wraps every encoding (unless the backend already adds them); when False,
    the backend's own post-processor (e.g. BERT's [CLS] ... [SEP]) is left as it is.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        unk_token: str | None = None,
        chat_template: str | None = None,
        add_bos_token: bool = False,
        add_eos_token: bool = False,
        model_max_length: int | None = None,
    ):
        if not isinstance(backend, Backend):
            raise LmforgeError(f"backend must be a tokenizers.Tokenizer, got {type(backend).__name__}")
        self.backend = backend
        named = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token, "unk_token": unk_token}
        for role, token in named.items():
            if token is not None and (not isinstance(token, str) or not token):
                raise LmforgeError(f"{role} must be a non-empty string or None, got {token!r}")
        self.bos_token, self.eos_token, self.pad_token, self.unk_token = bos_token, eos_token, pad_token, unk_token
        if chat_template is not None and (not isinstance(chat_template, str) or not chat_template):
            raise LmforgeError(f"chat_template must be a non-empty string or None, got {chat_template!r:.80}")
        self.chat_template = chat_template
        if model_max_length is not None and (not isinstance(model_max_length, int) or model_max_length <= 0):
            raise LmforgeError(f"model_max_length must be a positive integer or None, got {model_max_length!r}")
        self.model_max_length = model_max_length
        if add_bos_token and bos_token is None:
            raise LmforgeError("add_bos_token=True needs a bos_token")
        if add_eos_token and eos_token is None:
            raise LmforgeError("add_eos_token=True needs an eos_token")
        self.add_bos_token, self.add_eos_token = bool(add_bos_token), bool(add_eos_token)
        missing = [t for t in dict.fromkeys(named.values()) if t is not None and backend.token_to_id(t) is None]
        if missing:
            backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
        if add_bos_token or add_eos_token:
            self._install_bos_eos()

    # ---- loading and saving (the Hugging Face directory layout lives in hf_files.py) ----

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> "Tokenizer":
        """Load a bare `tokenizer.json`; special-token roles and the chat template come from `kwargs`."""
        path = Path(path)
        if not path.is_file():
            raise LmforgeError(f"tokenizer file not found: {path}")
        try:
            backend = Backend.from_file(str(path))
        except Exception as err:  # the Rust side raises plain Exception for malformed JSON
            raise LmforgeError(f"cannot read tokenizer file {path}: {err}") from None
        return cls(backend, **kwargs)

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> "Tokenizer":
        """Load a Hugging Face tokenizer directory (tokenizer.json + optional config, special-token map, template)."""
        backend, kwargs = read_hf_dir(Path(path))
        return cls(backend, **kwargs)

    def save(self, path: str | os.PathLike) -> None:
        """Write a directory that both `Tokenizer.from_dir` and `transformers.AutoTokenizer` load identically."""
        write_hf_dir(self, Path(path))

    # ---- encoding and decoding ----

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; special tokens written in the text are matched whole, never split."""
        if not isinstance(text, str):
            raise LmforgeError(f"encode expects a string, got {type(text).__name__}")
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        """Token ids of several texts at once (parallel in the Rust backend)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise LmforgeError("encode_batch expects a list of strings")
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)]

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        """Text of token ids (a list, tuple, tensor or array of ints, or one int).

        Ids past the vocabulary (padded embedding rows a model may sample) decode to nothing, as in transformers.
        """
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
        try:
            ids = [operator.index(i) for i in ids]
        except TypeError:
            raise LmforgeError(f"decode expects a sequence of integer ids, got {ids!r:.80}") from None
        bad = [i for i in ids if not 0 <= i < _MAX_ID]
        if bad:
            raise LmforgeError(f"token ids must be in [0, 2**32), got {bad[:5]}")
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        """The token string of id `i`, or None if `i` is not an id of this vocabulary."""
        try:
            i = operator.index(i)
        except TypeError:
            return None
        return self.backend.id_to_token(i) if 0 <= i < _MAX_ID else None

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str | None]:
        return [self.id_to_token(i) for i in ids]

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (the embedding matrix needs at least this many rows)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    @property
    def bos_token_id(self) -> int | None:
        return None if self.bos_token is None else self.backend.token_to_id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return None if self.eos_token is None else self.backend.token_to_id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return None if self.pad_token is None else self.backend.token_to_id(self.pad_token)

    @property
    def unk_token_id(self) -> int | None:
        return None if self.unk_token is None else self.backend.token_to_id(self.unk_token)

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """The named special tokens that are set, as transformers hands them to chat templates."""
        return {role: getattr(self, role) for role in SPECIAL_ROLES if getattr(self, role) is not None}

    @property
    def all_special_ids(self) -> list[int]:
        return sorted(i for i, t in self.backend.get_added_tokens_decoder().items() if t.special)

    # ---- vocabulary expansion ----

    def add_tokens(self, tokens: list[str], special: bool = False) -> int:
        """Add tokens to the vocabulary (new ones get the next free ids); returns how many were new.

        Special tokens are matched verbatim in text and dropped by `decode(skip_special_tokens=True)`; normal ones
        are matched after normalisation. A token already in the vocabulary only becomes unsplittable. Grow the
        model's embeddings to `vocab_size` afterwards.
        """
        if isinstance(tokens, str) or not all(isinstance(t, str) and t for t in tokens):
            raise LmforgeError(f"add_tokens expects a list of non-empty strings, got {tokens!r:.100}")
        before = self.vocab_size
        added = [AddedToken(t, special=special, normalized=not special) for t in dict.fromkeys(tokens)]
        if special:
            self.backend.add_special_tokens(added)
        else:
            self.backend.add_tokens(added)
        self.__dict__.pop("_plain", None)  # a token that became special changes what is control text
        self.__dict__.pop("_controls", None)
        return self.vocab_size - before

    # ---- chat ----

    def apply_chat_template(
        self,
        messages: list[dict],
        add_generation_prompt: bool = False,
        tokenize: bool = False,
        chat_template: str | None = None,
        placeholders: dict[str, int] | None = None,
        **template_kwargs: Any,
    ) -> str | list[int]:
        """Render a conversation with the chat template (or `chat_template`); with tokenize=True, its ids.

        The named special tokens are template variables (`bos_token`, `eos_token`...), overridable by kwargs.
        Tokenizing does not add BOS/EOS again: the template writes whatever special tokens it wants.

        With tokenize=True, special-token strings inside the messages and the template arguments (`tools`,
        `documents`...) are encoded as plain text: only the template itself writes control tokens (safe_chat.py).
        Always take ids from here, never by encoding the rendered text (that would let `<|im_start|>` in a user
        message become a real role marker).

        placeholders (tokenize=True): {character: token id}; each such character in the rendered text becomes that
        one id, the text around it encoded apart (how an image's place in a message reaches the prompt as the
        image token). The caller picks characters that no message contains (e.g. from Unicode's private use area).
        """
        template = chat_template if chat_template is not None else self.chat_template
        if template is None:
            raise LmforgeError(
                "this tokenizer has no chat template: pass chat_template=... (e.g. lmforge.tokenizer."
                "BUILTIN_TEMPLATES['chatml']) or set tokenizer.chat_template"
            )
        trusted = {role: template_kwargs.pop(role) for role in SPECIAL_ROLES if role in template_kwargs}
        variables = {**self.special_tokens_map, **trusted}
        if not tokenize:
            text = render_chat_template(template, messages, add_generation_prompt=add_generation_prompt,
                                        **variables, **template_kwargs)
            return text
        escaper = Escaper(self._control_strings(), messages, template_kwargs, template)
        try:
            rendered = render_chat_template(template, escaper.escape(messages),
                                            add_generation_prompt=add_generation_prompt,
                                            **variables, **escaper.escape(template_kwargs))
        except LmforgeError as err:
            raise LmforgeError(escaper.unescape(str(err))) from None
        if not placeholders:
            return encode_rendered(rendered, escaper, self.backend, self._plain_backend())
        ids: list[int] = []
        for piece in re.split("([" + re.escape("".join(placeholders)) + "])", rendered):
            if piece in placeholders:
                ids.append(placeholders[piece])
            elif piece:
                ids.extend(encode_rendered(piece, escaper, self.backend, self._plain_backend()))
        return ids

    def encode_plain(self, text: str) -> list[int]:
        """Ids of `text` with special-token strings (`<|im_end|>`...) read as ordinary text, never as control ids."""
        if not isinstance(text, str):
            raise LmforgeError(f"encode_plain expects a string, got {type(text).__name__}")
        escaper = Escaper(self._control_strings(), text)
        return encode_plain_pieces([escaper.escape(text)], escaper, self._plain_backend())[0]

    def _control_strings(self) -> list[str]:
        key = self.backend.get_vocab_size(with_added_tokens=True)
        if getattr(self, "_controls", (None, None))[0] != key:
            self._controls = (key, control_strings(self.backend))
        return self._controls[1]

    def _plain_backend(self):
        """The backend copy with special-token matching off, made once per vocabulary (add_tokens changes it)."""
        key = self.backend.get_vocab_size(with_added_tokens=True)
        if getattr(self, "_plain", (None, None))[0] != key:
            self._plain = (key, plain_backend(self.backend))
        return self._plain[1]

    def _install_bos_eos(self) -> None:
        """Make the backend wrap encodings in BOS/EOS, as transformers' `update_post_processor` does."""
        bos_id, eos_id = self.bos_token_id, self.eos_token_id
        probe = self.backend.encode("", add_special_tokens=True).ids
        has_bos = bool(probe) and probe[0] == bos_id
        has_eos = bool(probe) and probe[-1] == eos_id and (len(probe) > 1 or not self.add_bos_token)
        if (has_bos or not self.add_bos_token) and (has_eos or not self.add_eos_token):
            return
        bos = f"{self.bos_token}:0 " if self.add_bos_token else ""
        eos = f" {self.eos_token}:0" if self.add_eos_token else ""
        bos1 = f" {self.bos_token}:1" if self.add_bos_token else ""
        eos1 = f" {self.eos_token}:1" if self.add_eos_token else ""
        specials = [(self.bos_token, bos_id)] if self.add_bos_token else []
        if self.add_eos_token and self.eos_token != self.bos_token:
            specials.append((self.eos_token, eos_id))
        self.backend.post_processor = processors.TemplateProcessing(
            single=f"{bos}$A:0{eos}", pair=f"{bos}$A:0{eos}{bos1} $B:1{eos1}", special_tokens=specials
        )

    def __repr__(self) -> str:
        roles = ", ".join(f"{k}={v!r}" for k, v in self.special_tokens_map.items())
        template = "yes" if self.chat_template else "no"
        return f"Tokenizer(vocab_size={self.vocab_size}, {roles}, chat_template={template})"
