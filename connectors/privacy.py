"""Keyed hashing of MAC addresses, and redaction of personal data in raw bytes.

A MAC address is personal data: the first step replaces it with a 64-bit HMAC-SHA256
keyed by a secret from the environment, and nothing after that step sees it. A MAC with
the locally administered bit set (0x02 of the first octet) is randomised by the phone;
its hash also covers the UTC day, so it can never be linked across days.

>>> h = DeviceHasher(b"k")
>>> h.device("A4:5E:60:1B:22:9C", 0) == h.device("a4-5e-60-1b-22-9c", 86_400_000 * 5)
True
>>> is_randomized("a6:5e:60:1b:22:9c"), is_randomized("a4:5e:60:1b:22:9c")
(True, False)
>>> h.device("a6:5e:60:1b:22:9c", 0) == h.device("a6:5e:60:1b:22:9c", 86_400_000)
False
>>> redact(b'{"mac": "a4:5e:60:1b:22:9c", "phone": "13812345678"}', h)
b'{"mac": "mac#2376c9442d73a11a", "phone": "phone#redacted"}'
>>> redact(b'{"seq": 2187, "ie": [0, 1, 50], "vendor_ie":[6130]}', h)
b'{"seq": null, "ie": null, "vendor_ie":null}'
"""

from __future__ import annotations

import hmac
import re

_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-]?)[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4}$")
_MAC_IN_TEXT = re.compile(rb"(?<![0-9A-Fa-f])[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}(?![0-9A-Fa-f])")
_BARE_MAC_IN_TEXT = re.compile(rb"(?<![0-9A-Fa-f])[0-9A-Fa-f]{12}(?![0-9A-Fa-f])")
_PHONE_IN_TEXT = re.compile(rb"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d{9}(?!\d)")
# A probe's sequence number and element lists (JSON as sensors write it): dropped from raw text.
_SEQ_IN_TEXT = re.compile(rb'("seq"\s*:\s*)-?\d+')
_ELEMENTS_IN_TEXT = re.compile(rb'("(?:vendor_)?ie"\s*:\s*)\[[^\]]*\]')
DAY_MS = 86_400_000


def normalize_mac(mac: str) -> str | None:
    """Lower-case, colon-separated form, or None if ``mac`` is not a MAC address.

    >>> normalize_mac("A4-5E-60-1B-22-9C"), normalize_mac("a45e601b229c"), normalize_mac("nope")
    ('a4:5e:60:1b:22:9c', 'a4:5e:60:1b:22:9c', None)
    """
    if not _MAC.match(mac):
        return None
    digits = mac.replace(":", "").replace("-", "").lower()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def is_randomized(mac: str) -> bool:
    """True if the locally administered bit is set (the phone made this MAC up)."""
    return bool(int(mac[:2], 16) & 0x02)


class DeviceHasher:
    """Turns MAC addresses into stable, keyed 64-bit device ids."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the MAC hash key must not be empty")
        self._key = key
        self._seq_offsets: dict[int, int] = {}  # UTC day -> offset
        self._fingerprints: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}

    def seq(self, seq: int, ts_ms: int) -> int:
        """An 802.11 sequence number as it leaves the first step: shifted by a keyed offset
        of the UTC day, mod 4096. Differences survive (a phone's numbers still continue
        across a MAC change), the raw number does not.

        >>> h = DeviceHasher(b"k")
        >>> a, b = h.seq(4095, 0), h.seq(3, 1000)
        >>> (b - a) % 4096, h.seq(7, 0), h.seq(7, 86_400_000)  # the next day, another offset
        (4, 28, 3687)
        """
        day = ts_ms // DAY_MS
        offset = self._seq_offsets.get(day)
        if offset is None:
            digest = hmac.digest(self._key, b"seq@%d" % day, "sha256")
            offset = self._seq_offsets[day] = int.from_bytes(digest[:2], "big") % 4096
        return (seq + offset) % 4096

    def fingerprint(self, ie: list[int] | None, vendor_ie: list[int] | None) -> int:
        """A keyed 63-bit hash of a frame's information-element ids and vendor OUIs (0 if
        it has neither). Phones of one model share it, and it survives MAC randomisation;
        without the key it gives nothing back. Cached: a site hears few models.

        >>> h = DeviceHasher(b"k")
        >>> h.fingerprint([0, 1, 50], [6130]) == h.fingerprint([0, 1, 50], [6130]), h.fingerprint(None, [])
        (True, 0)
        >>> h.fingerprint([0, 1, 50], [6130]) == DeviceHasher(b"other").fingerprint([0, 1, 50], [6130])
        False
        """
        if not ie and not vendor_ie:
            return 0
        key = (tuple(ie or ()), tuple(vendor_ie or ()))
        value = self._fingerprints.get(key)
        if value is None:
            if len(self._fingerprints) >= 65536:
                self._fingerprints.clear()
            text = b"ie@" + ",".join(map(str, key[0])).encode() + b"|" + ",".join(map(str, key[1])).encode()
            digest = hmac.digest(self._key, text, "sha256")
            value = self._fingerprints[key] = (int.from_bytes(digest[:8], "big") >> 1) or 1
        return value

    def device(self, mac: str, ts_ms: int) -> int:
        """64-bit device id of a MAC (any common notation) heard at ``ts_ms``.

        Raises ValueError if ``mac`` is not a MAC address.
        """
        norm = normalize_mac(mac)
        if norm is None:
            raise ValueError(f"not a MAC address: {len(mac)} characters")
        return self.device_normalized(norm, ts_ms)

    def device_normalized(self, mac: str, ts_ms: int) -> int:
        """As ``device`` for a MAC already in lower-case colon form (the hot path)."""
        msg = mac.encode()
        if int(mac[:2], 16) & 0x02:
            msg += b"@%d" % (ts_ms // DAY_MS)
        return int.from_bytes(hmac.digest(self._key, msg, "sha256")[:8], "big")

    def token(self, mac: str) -> str:
        """A printable stand-in for a MAC in redacted text."""
        norm = normalize_mac(mac) or mac.lower()
        return f"mac#{int.from_bytes(hmac.digest(self._key, norm.encode(), 'sha256')[:8], 'big'):016x}"


# A JSON escape of a character that may be part of a MAC (hex digit, ':' or '-'): none of
# them is special in JSON, so writing it plainly keeps the value and lets redaction see it.
_MAC_CHAR_ESCAPE = re.compile(rb"\\u00(3[0-9a]|4[1-6]|6[1-6]|2d)", re.IGNORECASE)


def unescape_mac_chars(raw: bytes) -> bytes:
    r"""``raw`` with JSON escapes of hex digits, ``:`` and ``-`` written plainly.

    >>> unescape_mac_chars(rb'{"mac": "\u0061\u00344:5e", "q": "\u0022"}')
    b'{"mac": "a44:5e", "q": "\\u0022"}'
    """
    if b"\\u" not in raw:
        return raw
    return _MAC_CHAR_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)


def redact(raw: bytes, hasher: DeviceHasher) -> bytes:
    """Replace every MAC address and mainland-China mobile number in ``raw``, MACs written
    with JSON ``\\u`` escapes included, and a probe's ``seq`` and element lists (``ie``,
    ``vendor_ie``) with ``null``.

    Used on every raw value that leaves the first step (dead-letter records, logs).
    """
    out = _MAC_IN_TEXT.sub(lambda m: hasher.token(m.group().decode()).encode(), unescape_mac_chars(raw))
    out = _BARE_MAC_IN_TEXT.sub(lambda m: hasher.token(m.group().decode()).encode(), out)
    out = _SEQ_IN_TEXT.sub(rb"\1null", out)
    out = _ELEMENTS_IN_TEXT.sub(rb"\1null", out)
    return _PHONE_IN_TEXT.sub(b"phone#redacted", out)
