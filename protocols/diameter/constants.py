"""Numbers from the Diameter RFCs: header flags, command codes, application ids, AVP codes and
Result-Codes (RFC 6733 §3, §4.5, §7.1; RFC 4006 / RFC 8506 §8, §12)."""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "AVP_FLAG_M",
    "AVP_FLAG_P",
    "AVP_FLAG_V",
    "AVP_RESERVED_MASK",
    "FLAG_E",
    "FLAG_P",
    "FLAG_R",
    "FLAG_T",
    "HEADER_LENGTH",
    "RELAY_APPLICATION_ID",
    "VERSION",
    "AppId",
    "AvpCode",
    "CCRequestType",
    "CommandCode",
    "DisconnectCause",
    "ResultCode",
]

# RFC 6733 §3: the only version defined.
VERSION = 1
# RFC 6733 §3: version(1) length(3) flags(1) code(3) app-id(4) hop-by-hop(4) end-to-end(4).
HEADER_LENGTH = 20

# Command flags (RFC 6733 §3): Request, Proxiable, Error, potentially reTransmitted.
FLAG_R = 0x80
FLAG_P = 0x40
FLAG_E = 0x20
FLAG_T = 0x10

# AVP flags (RFC 6733 §4.1): Vendor-specific, Mandatory, Protected (deprecated but legal).
AVP_FLAG_V = 0x80
AVP_FLAG_M = 0x40
AVP_FLAG_P = 0x20
# The five low AVP flag bits are reserved and MUST be zero (§4.1); set bits give 3009.
AVP_RESERVED_MASK = 0x1F

# RFC 6733 §2.4 / §5.3: the relay application id, advertised by relays; matches everything.
RELAY_APPLICATION_ID = 0xFFFFFFFF


class CommandCode(IntEnum):
    """Command codes of the base protocol (RFC 6733 §3.1) and Credit-Control (RFC 4006 §3)."""

    CAPABILITIES_EXCHANGE = 257
    RE_AUTH = 258
    ACCOUNTING = 271
    CREDIT_CONTROL = 272
    ABORT_SESSION = 274
    SESSION_TERMINATION = 275
    DEVICE_WATCHDOG = 280
    DISCONNECT_PEER = 282


class AppId(IntEnum):
    """Application ids (RFC 6733 §2.4, RFC 4006 §1.3)."""

    COMMON = 0
    ACCOUNTING = 3
    CREDIT_CONTROL = 4


class AvpCode(IntEnum):
    """AVP codes used by the code (the dictionary knows more)."""

    ACCT_APPLICATION_ID = 259
    AUTH_APPLICATION_ID = 258
    DESTINATION_HOST = 293
    DESTINATION_REALM = 283
    DISCONNECT_CAUSE = 273
    ERROR_MESSAGE = 281
    FAILED_AVP = 279
    FIRMWARE_REVISION = 267
    HOST_IP_ADDRESS = 257
    INBAND_SECURITY_ID = 299
    ORIGIN_HOST = 264
    ORIGIN_REALM = 296
    ORIGIN_STATE_ID = 278
    PRODUCT_NAME = 269
    PROXY_INFO = 284
    RESULT_CODE = 268
    SESSION_ID = 263
    SUPPORTED_VENDOR_ID = 265
    VENDOR_ID = 266
    VENDOR_SPECIFIC_APPLICATION_ID = 260
    # RFC 4006 §8
    CC_INPUT_OCTETS = 412
    CC_OUTPUT_OCTETS = 414
    CC_REQUEST_NUMBER = 415
    CC_REQUEST_TYPE = 416
    CC_SERVICE_SPECIFIC_UNITS = 417
    CC_TIME = 420
    CC_TOTAL_OCTETS = 421
    GRANTED_SERVICE_UNIT = 431
    REQUESTED_SERVICE_UNIT = 437
    SERVICE_CONTEXT_ID = 461
    USED_SERVICE_UNIT = 446
    VALIDITY_TIME = 448
    MULTIPLE_SERVICES_CREDIT_CONTROL = 456
    SUBSCRIPTION_ID = 443


class ResultCode(IntEnum):
    """Result-Code values (RFC 6733 §7.1, RFC 4006 §9)."""

    DIAMETER_SUCCESS = 2001
    DIAMETER_LIMITED_SUCCESS = 2002
    DIAMETER_COMMAND_UNSUPPORTED = 3001
    DIAMETER_UNABLE_TO_DELIVER = 3002
    DIAMETER_REALM_NOT_SERVED = 3003
    DIAMETER_TOO_BUSY = 3004
    DIAMETER_LOOP_DETECTED = 3005
    DIAMETER_REDIRECT_INDICATION = 3006
    DIAMETER_APPLICATION_UNSUPPORTED = 3007
    DIAMETER_INVALID_HDR_BITS = 3008
    DIAMETER_INVALID_AVP_BITS = 3009
    DIAMETER_UNKNOWN_PEER = 3010
    DIAMETER_AUTHENTICATION_REJECTED = 4001
    DIAMETER_ELECTION_LOST = 4003
    DIAMETER_END_USER_SERVICE_DENIED = 4010
    DIAMETER_CREDIT_LIMIT_REACHED = 4012
    DIAMETER_AVP_UNSUPPORTED = 5001
    DIAMETER_UNKNOWN_SESSION_ID = 5002
    DIAMETER_INVALID_AVP_VALUE = 5004
    DIAMETER_MISSING_AVP = 5005
    DIAMETER_RESOURCES_EXCEEDED = 5006
    DIAMETER_CONTRADICTING_AVPS = 5007
    DIAMETER_AVP_OCCURS_TOO_MANY_TIMES = 5009
    DIAMETER_NO_COMMON_APPLICATION = 5010
    DIAMETER_UNSUPPORTED_VERSION = 5011
    DIAMETER_UNABLE_TO_COMPLY = 5012
    DIAMETER_INVALID_AVP_LENGTH = 5014
    DIAMETER_INVALID_MESSAGE_LENGTH = 5015
    DIAMETER_USER_UNKNOWN = 5030


class CCRequestType(IntEnum):
    """CC-Request-Type values (RFC 4006 §8.3)."""

    INITIAL_REQUEST = 1
    UPDATE_REQUEST = 2
    TERMINATION_REQUEST = 3
    EVENT_REQUEST = 4


class DisconnectCause(IntEnum):
    """Disconnect-Cause values (RFC 6733 §5.4.3)."""

    REBOOTING = 0
    BUSY = 1
    DO_NOT_WANT_TO_TALK_TO_YOU = 2
