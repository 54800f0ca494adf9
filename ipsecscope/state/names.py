"""Display helpers over the registry enums in :mod:`ipsecscope.model.iana`.

The registry numbers themselves live only in ``iana`` (``NotifyType``, ``Ikev1NotifyType``,
``ExchangeType``, ``Ikev1Exchange``, ``Ikev1Payload``, ``DhGroup``); callers compare wire values
with those members directly (they are IntEnums). What stays here is how the correlation engine
*prints* them: version-aware lookups with the fallback texts findings and ``sas`` output use.
"""

from __future__ import annotations

from ..model import iana

# iana.NotifyType notes IKEv2 notify 47 as assigned but leaves it out because its name could
# not be checked there; findings have always printed it under this name, so keep that.
_V2_UNCHECKED = {47: "STATE_NOT_FOUND"}

# Human labels for IKEv1 exchanges (RFC 2408 §4, RFC 2409 §5) as findings and `sas` print them;
# the registry names are the iana.Ikev1Exchange member names.
_X1 = iana.Ikev1Exchange
V1_EXCHANGE_NAMES = {_X1.BASE: "Base", _X1.IDENTITY_PROTECTION: "Main Mode",
                     _X1.AUTHENTICATION_ONLY: "Authentication Only", _X1.AGGRESSIVE: "Aggressive Mode",
                     _X1.INFORMATIONAL: "Informational", _X1.TRANSACTION: "Transaction",
                     _X1.QUICK_MODE: "Quick Mode", _X1.NEW_GROUP_MODE: "New Group Mode"}


def notify_name(value: int, version: int = 2) -> str:
    """Registry name of a notify type, e.g. ``notify_name(14) == "NO_PROPOSAL_CHOSEN"``."""
    enum = iana.NotifyType if version == 2 else iana.Ikev1NotifyType
    try:
        return enum(value).name
    except ValueError:
        pass
    if version == 2 and value in _V2_UNCHECKED:
        return _V2_UNCHECKED[value]
    return f"NOTIFY {value}"


def exchange_name(value: int, version: int = 2) -> str:
    """``"Main Mode"``-style label for IKEv1, registry name (``IKE_SA_INIT``) for IKEv2."""
    if version == 1:
        return V1_EXCHANGE_NAMES.get(value, f"exchange {value}")
    return iana.name(iana.ExchangeType, value)


def one_way(value: int, version: int) -> bool:
    """An IKEv1 Informational or Transaction message expects no answer under its Message ID
    (RFC 2408 §4.8; a DPD R-U-THERE-ACK or Mode Config reply has its own): none is no failure."""
    return version == 1 and value in (_X1.INFORMATIONAL, _X1.TRANSACTION)


def dh_name(group: int | None) -> str:
    if group is None:
        return "?"
    return iana.name(iana.DhGroup, group)
