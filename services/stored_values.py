"""How customer states and decision views are stored in Redis: as text, JSON or zstd-compressed.

The scorer writes every customer's state and decision view on every batch that touches the
customer. Compressed with a zstd dictionary trained on such values (RFC 8878 §5: the dictionary
carries what they share, each frame only what is particular to one customer) they take a fraction
of the space.

A stored value is either
- **JSON**: what `FATIGUE_STORE_FORMAT=json` writes, and what every
  value written before compression existed is; or
- the **base64** (RFC 4648 §4, standard alphabet, padded) of one **zstd frame** (RFC 8878) of a
  payload, compressed with the dictionary its frame header names (`Dictionary_ID`); it begins with
  `KLUv` (the frame's magic number), which no JSON text does. The payload is JSON (decision views,
  and states before format version 3) or a scorer state's MessagePack array (format version 3,
  scorer/core/state_codec.py: `payload_of` hands it over, `loads` only parses JSON). Base64 keeps the
  values text, so the Redis clients, all built with `decode_responses=True`, read them like any other
  key (the cost: a third more bytes than the raw frame).

Readers accept both, whatever the writer's setting, so switching the format needs no migration:
values are rewritten in the new one as their customers are touched. The dictionaries ship in
`services/zstd_dictionaries/` (`<name>.zdict`); every one stays as long as values compressed with it
may be stored (a reader looks a frame's dictionary up by its id), and `CURRENT_DICTIONARY` is the one
new values are written with. `bench/train_dictionary.py` trains one from the benchmark's synthetic
customers (`make dictionary`); docs/architecture.md ("Stored values") has the details.
"""

from __future__ import annotations

import binascii
import json
from base64 import b64decode, b64encode
from functools import cache
from importlib import resources
from typing import Any, Literal

import orjson

try:  # the standard library from Python 3.14 on
    from compression import zstd  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on the interpreter
    from backports import zstd  # type: ignore[import-not-found,no-redef,unused-ignore]

StoreFormat = Literal["zstd", "json"]
STORE_FORMATS: tuple[StoreFormat, ...] = ("zstd", "json")

CURRENT_DICTIONARY = "fatigue-2"
"""The dictionary new compressed values are written with (services/zstd_dictionaries/<name>.zdict)."""

COMPRESSION_LEVEL = 3
"""zstd's default level: measured against 6 on our documents, 5% larger frames at a third of the CPU."""

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
"""A stored value never decompresses to more than this (a corrupt or hostile value cannot exhaust
memory); a state or snapshot is a few KiB."""


FRAME_PREFIX = b"KLUv"
"""How the base64 of every zstd frame begins (its magic number 0xFD2FB528, RFC 8878 §3.1.1), and no
JSON text can: what tells a compressed value from a JSON one."""


_JSON_FIRST_BYTES = frozenset(b'{["-0123456789tfn \t\r\n')
"""The bytes a JSON text can begin with (RFC 8259): what a binary payload's first byte is not."""


class StoredValueUnreadable(ValueError):
    """A stored value is neither JSON nor a zstd frame this build can read (and which one, why)."""


@cache
def _dictionaries() -> dict[str, Any]:
    """Every shipped dictionary by name (loaded once per process)."""
    found = {}
    for entry in resources.files("services.zstd_dictionaries").iterdir():
        if entry.name.endswith(".zdict"):
            found[entry.name.removesuffix(".zdict")] = zstd.ZstdDict(entry.read_bytes())
    return found


@cache
def _dictionaries_by_id() -> dict[int, Any]:
    return {d.dict_id: d for d in _dictionaries().values()}


class ValueEncoder:
    """Writes stored values in one format (the scorer's `FATIGUE_STORE_FORMAT`)."""

    def __init__(self, store_format: StoreFormat = "zstd", dictionary: str = CURRENT_DICTIONARY) -> None:
        if store_format not in STORE_FORMATS:
            raise ValueError(f"store format must be one of {', '.join(STORE_FORMATS)}, not {store_format!r}")
        self._compressor = None
        if store_format == "zstd":
            self._compressor = zstd.ZstdCompressor(COMPRESSION_LEVEL, zstd_dict=_dictionaries()[dictionary])

    @property
    def compresses(self) -> bool:
        """Whether values are stored compressed (`zstd`): only then can a payload be binary."""
        return self._compressor is not None

    def encode(self, document: Any) -> bytes:
        """One JSON-serialisable document as the value to store."""
        text = orjson.dumps(document)
        if self._compressor is None:
            return text
        return b64encode(self._compressor.compress(text, zstd.ZstdCompressor.FLUSH_FRAME))

    def encode_payload(self, payload: bytes) -> bytes:
        """An already-encoded payload (a scorer state's MessagePack: scorer/core/state_codec.py) as
        the value to store; only for the compressed format (text stays text)."""
        if self._compressor is None:
            raise ValueError("a binary payload is stored compressed only (FATIGUE_STORE_FORMAT=zstd)")
        return b64encode(self._compressor.compress(payload, zstd.ZstdCompressor.FLUSH_FRAME))


def payload_of(raw: str | bytes) -> bytes:
    """What a stored value holds: as stored if it is JSON, decompressed if it is a frame (JSON, or a
    scorer state's MessagePack). StoredValueUnreadable when it is neither."""
    return json_text(raw)


def json_text(raw: str | bytes) -> bytes:
    """The payload of a stored value (as stored if it is JSON, decompressed if it is a frame)."""
    data = raw.encode() if isinstance(raw, str) else raw
    if not data.startswith(FRAME_PREFIX):
        return data
    try:
        frame = b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StoredValueUnreadable(f"neither JSON nor base64 of a zstd frame: {exc}") from None
    try:
        dictionary_id = zstd.get_frame_info(frame).dictionary_id
    except zstd.ZstdError as exc:
        raise StoredValueUnreadable(f"not a zstd frame: {exc}") from None
    dictionary = _dictionaries_by_id().get(dictionary_id) if dictionary_id else None
    if dictionary_id and dictionary is None:
        raise StoredValueUnreadable(
            f"compressed with zstd dictionary id {dictionary_id}, which this build does not ship "
            f"(it has {sorted(_dictionaries_by_id())}); was it written by a newer version?")
    decompressor = zstd.ZstdDecompressor(zstd_dict=dictionary)
    try:
        text = decompressor.decompress(frame, max_length=MAX_DOCUMENT_BYTES)
    except zstd.ZstdError as exc:
        raise StoredValueUnreadable(f"corrupt zstd frame: {exc}") from None
    if not decompressor.eof:
        raise StoredValueUnreadable(
            f"zstd frame incomplete or larger than {MAX_DOCUMENT_BYTES} bytes decompressed")
    if decompressor.unused_data:
        raise StoredValueUnreadable("bytes after the zstd frame")
    return text  # type: ignore[no-any-return]


def loads(raw: str | bytes) -> Any:
    """A stored JSON value parsed: orjson, or the stdlib for what orjson refuses and Python's json writes
    (NaN or Infinity in a hand-written or old value). StoredValueUnreadable or ValueError (also for a
    binary payload: a scorer state is read with scorer/core/state_codec.py)."""
    text = json_text(raw)
    if text and text[0] not in _JSON_FIRST_BYTES:
        raise StoredValueUnreadable("not JSON: a binary payload (a scorer state is read by the state codec)")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
