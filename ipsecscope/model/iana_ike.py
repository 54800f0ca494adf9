"""The IANA registries of IKEv2 and IKEv1 besides the transform IDs (those are in
:mod:`ipsecscope.model.iana`, which every user reads these through: ``iana.NotifyType``).
Sources as there. Kept apart so that commands which never see an IKE message do not build
these ~40 enums at start-up (``decrypt``, ``summary``)."""

from __future__ import annotations

from enum import IntEnum


class ExchangeType(IntEnum):
    IKE_SA_INIT = 34
    IKE_AUTH = 35
    CREATE_CHILD_SA = 36
    INFORMATIONAL = 37
    IKE_SESSION_RESUME = 38
    GSA_AUTH = 39
    GSA_REGISTRATION = 40
    GSA_REKEY = 41
    IKE_INTERMEDIATE = 43
    IKE_FOLLOWUP_KE = 44


class PayloadType(IntEnum):
    NONE = 0
    SA = 33
    KE = 34
    IDi = 35
    IDr = 36
    CERT = 37
    CERTREQ = 38
    AUTH = 39
    NONCE = 40  # "Ni, Nr"
    N = 41
    D = 42
    V = 43
    TSi = 44
    TSr = 45
    SK = 46
    CP = 47
    EAP = 48
    GSPM = 49
    IDg = 50
    GSA = 51
    KD = 52
    SKF = 53
    PS = 54


class TransformType(IntEnum):
    ENCR = 1
    PRF = 2
    INTEG = 3
    KE = 4  # "D-H" before RFC 9370
    ESN = 5
    ADDKE1 = 6
    ADDKE2 = 7
    ADDKE3 = 8
    ADDKE4 = 9
    ADDKE5 = 10
    ADDKE6 = 11
    ADDKE7 = 12


class DhGroup(IntEnum):
    NONE = 0
    MODP_768 = 1
    MODP_1024 = 2
    MODP_1536 = 5
    MODP_2048 = 14
    MODP_3072 = 15
    MODP_4096 = 16
    MODP_6144 = 17
    MODP_8192 = 18
    ECP_256 = 19
    ECP_384 = 20
    ECP_521 = 21
    MODP_1024_160_POS = 22
    MODP_2048_224_POS = 23
    MODP_2048_256_POS = 24
    ECP_192 = 25
    ECP_224 = 26
    BRAINPOOLP224R1 = 27
    BRAINPOOLP256R1 = 28
    BRAINPOOLP384R1 = 29
    BRAINPOOLP512R1 = 30
    CURVE25519 = 31
    CURVE448 = 32
    GOST3410_2012_256 = 33
    GOST3410_2012_512 = 34
    ML_KEM_512 = 35
    ML_KEM_768 = 36
    ML_KEM_1024 = 37


class EsnTransform(IntEnum):
    NO_ESN = 0
    ESN = 1


class TransformAttribute(IntEnum):
    """IKEv2 "Transform Attribute Types" (RFC 7296 §3.3.5)."""

    KEY_LENGTH = 14


class NotifyType(IntEnum):
    """IKEv2 "Notify Message Error Types" (0-16383) and "Notify Message Status Types" (16384-65535).

    Types below 16384 are errors: a response carrying an unknown one means the request failed
    (RFC 7296 §3.10.1). 8192-16383 and 40960-65535 are private use.
    """

    RESERVED = 0
    UNSUPPORTED_CRITICAL_PAYLOAD = 1
    INVALID_IKE_SPI = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_SYNTAX = 7
    INVALID_MESSAGE_ID = 9
    INVALID_SPI = 11
    NO_PROPOSAL_CHOSEN = 14
    INVALID_KE_PAYLOAD = 17
    AUTHENTICATION_FAILED = 24
    SINGLE_PAIR_REQUIRED = 34
    NO_ADDITIONAL_SAS = 35
    INTERNAL_ADDRESS_FAILURE = 36
    FAILED_CP_REQUIRED = 37
    TS_UNACCEPTABLE = 38
    INVALID_SELECTORS = 39
    UNACCEPTABLE_ADDRESSES = 40  # RFC 4555
    UNEXPECTED_NAT_DETECTED = 41  # RFC 4555
    USE_ASSIGNED_HoA = 42  # RFC 5026
    TEMPORARY_FAILURE = 43  # RFC 7296
    CHILD_SA_NOT_FOUND = 44  # RFC 7296
    INVALID_GROUP_ID = 45  # RFC 9838 (G-IKEv2)
    AUTHORIZATION_FAILED = 46  # RFC 9838 (G-IKEv2)
    # 47 is assigned too but could not be checked here; it prints as "NotifyType 47".
    TS_MAX_QUEUE = 48  # RFC 9611
    # ---- status types ----
    INITIAL_CONTACT = 16384
    SET_WINDOW_SIZE = 16385
    ADDITIONAL_TS_POSSIBLE = 16386
    IPCOMP_SUPPORTED = 16387
    NAT_DETECTION_SOURCE_IP = 16388
    NAT_DETECTION_DESTINATION_IP = 16389
    COOKIE = 16390
    USE_TRANSPORT_MODE = 16391
    HTTP_CERT_LOOKUP_SUPPORTED = 16392
    REKEY_SA = 16393
    ESP_TFC_PADDING_NOT_SUPPORTED = 16394
    NON_FIRST_FRAGMENTS_ALSO = 16395
    MOBIKE_SUPPORTED = 16396  # RFC 4555
    ADDITIONAL_IP4_ADDRESS = 16397
    ADDITIONAL_IP6_ADDRESS = 16398
    NO_ADDITIONAL_ADDRESSES = 16399
    UPDATE_SA_ADDRESSES = 16400
    COOKIE2 = 16401
    NO_NATS_ALLOWED = 16402
    AUTH_LIFETIME = 16403  # RFC 4478
    MULTIPLE_AUTH_SUPPORTED = 16404  # RFC 4739
    ANOTHER_AUTH_FOLLOWS = 16405
    REDIRECT_SUPPORTED = 16406  # RFC 5685
    REDIRECT = 16407
    REDIRECTED_FROM = 16408
    TICKET_LT_OPAQUE = 16409  # RFC 5723
    TICKET_REQUEST = 16410
    TICKET_ACK = 16411
    TICKET_NACK = 16412
    TICKET_OPAQUE = 16413
    LINK_ID = 16414  # RFC 5739
    USE_WESP_MODE = 16415  # RFC 5840
    ROHC_SUPPORTED = 16416  # RFC 5857
    EAP_ONLY_AUTHENTICATION = 16417  # RFC 5998
    CHILDLESS_IKEV2_SUPPORTED = 16418  # RFC 6023
    QUICK_CRASH_DETECTION = 16419  # RFC 6290
    IKEV2_MESSAGE_ID_SYNC_SUPPORTED = 16420  # RFC 6311
    IPSEC_REPLAY_COUNTER_SYNC_SUPPORTED = 16421
    IKEV2_MESSAGE_ID_SYNC = 16422
    IPSEC_REPLAY_COUNTER_SYNC = 16423
    SECURE_PASSWORD_METHODS = 16424  # RFC 6467
    PSK_PERSIST = 16425  # RFC 6631
    PSK_CONFIRM = 16426
    ERX_SUPPORTED = 16427  # RFC 6867
    IFOM_CAPABILITY = 16428
    SENDER_REQUEST_ID = 16429
    IKEV2_FRAGMENTATION_SUPPORTED = 16430  # RFC 7383
    SIGNATURE_HASH_ALGORITHMS = 16431  # RFC 7427
    CLONE_IKE_SA_SUPPORTED = 16432  # RFC 7791
    CLONE_IKE_SA = 16433
    PUZZLE = 16434  # RFC 8019
    USE_PPK = 16435  # RFC 8784
    PPK_IDENTITY = 16436
    NO_PPK_AUTH = 16437
    INTERMEDIATE_EXCHANGE_SUPPORTED = 16438  # RFC 9242
    IP4_ALLOWED = 16439  # RFC 8983
    IP6_ALLOWED = 16440
    ADDITIONAL_KEY_EXCHANGE = 16441  # RFC 9370
    USE_AGGFRAG = 16442  # RFC 9347
    SUPPORTED_AUTH_METHODS = 16443  # RFC 9593
    SA_RESOURCE_INFO = 16444  # RFC 9611
    USE_PPK_INT = 16445  # RFC 9867
    PPK_IDENTITY_KEY = 16446  # RFC 9867

    @property
    def is_error(self) -> bool:
        return self.value < 16384


def notify_is_error(value: int) -> bool:
    """True for the error range of IKEv2 notify types (RFC 7296 §3.10.1), known or not."""
    return 0 < value < 16384


class IdType(IntEnum):
    """IKEv2 "IKEv2 Identification Payload ID Types"."""

    ID_IPV4_ADDR = 1
    ID_FQDN = 2
    ID_RFC822_ADDR = 3
    ID_IPV6_ADDR = 5
    ID_DER_ASN1_DN = 9
    ID_DER_ASN1_GN = 10
    ID_KEY_ID = 11
    ID_FC_NAME = 12
    ID_NULL = 13  # RFC 7619


class AuthMethod(IntEnum):
    """IKEv2 "IKEv2 Authentication Method"."""

    RSA_DIGITAL_SIGNATURE = 1
    SHARED_KEY_MESSAGE_INTEGRITY_CODE = 2  # PSK
    DSS_DIGITAL_SIGNATURE = 3
    ECDSA_SHA_256_P_256 = 9  # RFC 4754
    ECDSA_SHA_384_P_384 = 10
    ECDSA_SHA_512_P_521 = 11
    GENERIC_SECURE_PASSWORD = 12  # RFC 6467
    NULL_AUTHENTICATION = 13  # RFC 7619
    DIGITAL_SIGNATURE = 14  # RFC 7427


class HashAlgorithm(IntEnum):
    """IKEv2 "Hash Algorithms" (RFC 7427 §7), carried in SIGNATURE_HASH_ALGORITHMS."""

    RESERVED = 0
    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4
    IDENTITY = 5  # RFC 8420
    STREEBOG_256 = 6
    STREEBOG_512 = 7


class TsType(IntEnum):
    """IKEv2 "IKEv2 Traffic Selector Types"."""

    TS_IPV4_ADDR_RANGE = 7
    TS_IPV6_ADDR_RANGE = 8
    TS_FC_ADDR_RANGE = 9  # RFC 4595
    TS_SECLABEL = 10  # RFC 9478


class CfgType(IntEnum):
    """IKEv2 "IKEv2 Configuration Payload CFG Types" (RFC 7296 §3.15)."""

    CFG_REQUEST = 1
    CFG_REPLY = 2
    CFG_SET = 3
    CFG_ACK = 4


class ConfigAttribute(IntEnum):
    """IKEv2 "IKEv2 Configuration Payload Attribute Types"."""

    INTERNAL_IP4_ADDRESS = 1
    INTERNAL_IP4_NETMASK = 2
    INTERNAL_IP4_DNS = 3
    INTERNAL_IP4_NBNS = 4
    INTERNAL_ADDRESS_EXPIRY = 5  # reserved by RFC 7296, still seen from old peers
    INTERNAL_IP4_DHCP = 6
    APPLICATION_VERSION = 7
    INTERNAL_IP6_ADDRESS = 8
    INTERNAL_IP6_NETMASK = 9  # reserved by RFC 7296
    INTERNAL_IP6_DNS = 10
    INTERNAL_IP6_NBNS = 11  # reserved by RFC 7296
    INTERNAL_IP6_DHCP = 12
    INTERNAL_IP4_SUBNET = 13
    SUPPORTED_ATTRIBUTES = 14
    INTERNAL_IP6_SUBNET = 15
    MIP6_HOME_PREFIX = 16  # RFC 5026
    INTERNAL_IP6_LINK = 17  # RFC 5739
    INTERNAL_IP6_PREFIX = 18
    HOME_AGENT_ADDRESS = 19
    P_CSCF_IP4_ADDRESS = 20  # RFC 7651
    P_CSCF_IP6_ADDRESS = 21
    FTT_KAT = 22
    EXTERNAL_SOURCE_IP4_NAT_INFO = 23  # RFC 8598? (3GPP)
    TIMEOUT_PERIOD_FOR_LIVENESS_CHECK = 24
    INTERNAL_DNS_DOMAIN = 25  # RFC 8598
    INTERNAL_DNSSEC_TA = 26  # RFC 8598
    ENCDNS_IP4 = 27  # RFC 9464
    ENCDNS_IP6 = 28
    ENCDNS_DIGEST_INFO = 29


class CertEncoding(IntEnum):
    """IKEv2 "IKEv2 Certificate Encodings" (RFC 7296 §3.6)."""

    PKCS7_WRAPPED_X509 = 1
    PGP_CERTIFICATE = 2
    DNS_SIGNED_KEY = 3
    X509_CERTIFICATE_SIGNATURE = 4
    KERBEROS_TOKEN = 6
    CERTIFICATE_REVOCATION_LIST = 7
    AUTHORITY_REVOCATION_LIST = 8
    SPKI_CERTIFICATE = 9
    X509_CERTIFICATE_ATTRIBUTE = 10
    RAW_RSA_KEY = 11  # deprecated by RFC 7670
    HASH_AND_URL_X509_CERTIFICATE = 12
    HASH_AND_URL_X509_BUNDLE = 13
    OCSP_CONTENT = 14  # RFC 4806
    RAW_PUBLIC_KEY = 15  # RFC 7670


class GatewayIdentityType(IntEnum):
    """IKEv2 "Gateway Identity Types" (RFC 5685 §9), in REDIRECT / REDIRECTED_FROM."""

    IPV4 = 1
    IPV6 = 2
    FQDN = 3


class IpcompTransform(IntEnum):
    """"IKEv2 IPComp Transform IDs" / IPCOMP transform identifiers (RFC 7296 §3.10.1)."""

    IPCOMP_OUI = 1
    IPCOMP_DEFLATE = 2
    IPCOMP_LZS = 3
    IPCOMP_LZJH = 4


class EapCode(IntEnum):
    """EAP Codes (RFC 3748 §4)."""

    REQUEST = 1
    RESPONSE = 2
    SUCCESS = 3
    FAILURE = 4


class EapType(IntEnum):
    """The EAP method types most seen inside IKEv2 (IANA "Method Types", subset)."""

    IDENTITY = 1
    NOTIFICATION = 2
    NAK = 3
    MD5_CHALLENGE = 4
    OTP = 5
    GTC = 6
    EAP_TLS = 13
    SIM = 18
    TTLS = 21
    AKA = 23
    PEAP = 25
    MSCHAPV2 = 26
    EXPANDED = 254


# ---- IKEv1 / ISAKMP (RFC 2407, 2408, 2409 and the "Internet Key Exchange (IKE) Attributes" and
# "ISAKMP" registries) -------------------------------------------------------------------------


class Ikev1Exchange(IntEnum):
    """ISAKMP "Exchange Types" (RFC 2408 §3.1, RFC 2409 §5, draft-dukes-ike-mode-cfg)."""

    NONE = 0
    BASE = 1
    IDENTITY_PROTECTION = 2  # Main Mode
    AUTHENTICATION_ONLY = 3
    AGGRESSIVE = 4
    INFORMATIONAL = 5
    TRANSACTION = 6  # Config Mode
    QUICK_MODE = 32
    NEW_GROUP_MODE = 33
    # aliases (not the registry's primary names; iana.name() prints the ones above)
    MAIN_MODE = 2
    CONFIG_MODE = 6


class Ikev1Payload(IntEnum):
    """ISAKMP "Next Payload Types" (RFC 2408 §3.1, RFC 3947, private-use values seen in the wild)."""

    NONE = 0
    SA = 1
    P = 2
    T = 3
    KE = 4
    ID = 5
    CERT = 6
    CR = 7
    HASH = 8
    SIG = 9
    NONCE = 10
    N = 11
    D = 12
    VID = 13
    ATTR = 14  # Config Mode attributes
    SAK = 15  # GDOI SA KEK
    SAT = 16  # GDOI SA TEK
    KD = 17  # GDOI Key Download
    SEQ = 18
    POP = 19
    NAT_D = 20  # RFC 3947
    NAT_OA = 21  # RFC 3947
    GAP = 22
    NAT_D_DRAFT = 130  # draft-ietf-ipsec-nat-t-ike-01..03
    NAT_OA_DRAFT = 131
    FRAG = 132  # Cisco/Microsoft IKE fragmentation


class Ikev1NotifyType(IntEnum):
    """ISAKMP "Notify Message Types" (RFC 2408 §3.14.1, RFC 2407 §4.6.3, RFC 3706 DPD)."""

    INVALID_PAYLOAD_TYPE = 1
    DOI_NOT_SUPPORTED = 2
    SITUATION_NOT_SUPPORTED = 3
    INVALID_COOKIE = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_MINOR_VERSION = 6
    INVALID_EXCHANGE_TYPE = 7
    INVALID_FLAGS = 8
    INVALID_MESSAGE_ID = 9
    INVALID_PROTOCOL_ID = 10
    INVALID_SPI = 11
    INVALID_TRANSFORM_ID = 12
    ATTRIBUTES_NOT_SUPPORTED = 13
    NO_PROPOSAL_CHOSEN = 14
    BAD_PROPOSAL_SYNTAX = 15
    PAYLOAD_MALFORMED = 16
    INVALID_KEY_INFORMATION = 17
    INVALID_ID_INFORMATION = 18
    INVALID_CERT_ENCODING = 19
    INVALID_CERTIFICATE = 20
    CERT_TYPE_UNSUPPORTED = 21
    INVALID_CERT_AUTHORITY = 22
    INVALID_HASH_INFORMATION = 23
    AUTHENTICATION_FAILED = 24
    INVALID_SIGNATURE = 25
    ADDRESS_NOTIFICATION = 26
    NOTIFY_SA_LIFETIME = 27
    CERTIFICATE_UNAVAILABLE = 28
    UNSUPPORTED_EXCHANGE_TYPE = 29
    UNEQUAL_PAYLOAD_LENGTHS = 30
    CONNECTED = 16384
    RESPONDER_LIFETIME = 24576  # IPsec DOI
    REPLAY_STATUS = 24577
    INITIAL_CONTACT = 24578
    R_U_THERE = 36136  # RFC 3706
    R_U_THERE_ACK = 36137
    UNITY_LOAD_BALANCE = 40501  # Cisco, private use
    UNITY_GROUP_HASH = 40503


class Ikev1Attribute(IntEnum):
    """IKE (phase 1) "Attribute Classes" (RFC 2409 Appendix A)."""

    ENCRYPTION_ALGORITHM = 1
    HASH_ALGORITHM = 2
    AUTHENTICATION_METHOD = 3
    GROUP_DESCRIPTION = 4
    GROUP_TYPE = 5
    GROUP_PRIME = 6
    GROUP_GENERATOR_ONE = 7
    GROUP_GENERATOR_TWO = 8
    GROUP_CURVE_A = 9
    GROUP_CURVE_B = 10
    LIFE_TYPE = 11
    LIFE_DURATION = 12
    PRF = 13
    KEY_LENGTH = 14
    FIELD_SIZE = 15
    GROUP_ORDER = 16
    BLOCK_SIZE = 17


class Ikev1IpsecAttribute(IntEnum):
    """IPsec DOI "IPSEC Security Association Attributes" (RFC 2407 §4.5)."""

    SA_LIFE_TYPE = 1
    SA_LIFE_DURATION = 2
    GROUP_DESCRIPTION = 3
    ENCAPSULATION_MODE = 4
    AUTHENTICATION_ALGORITHM = 5
    KEY_LENGTH = 6
    KEY_ROUNDS = 7
    COMPRESS_DICTIONARY_SIZE = 8
    COMPRESS_PRIVATE_ALGORITHM = 9
    ECN_TUNNEL = 10  # RFC 3168
    EXTENDED_SEQUENCE_NUMBER = 11  # RFC 4304
    AUTHENTICATION_KEY_LENGTH = 12
    SIGNATURE_ENCODING = 13
    ADDRESS_PRESERVATION = 14
    SA_DIRECTION = 15


class Ikev1EncapsulationMode(IntEnum):
    """Values of the Encapsulation Mode attribute (RFC 2407 §4.5, RFC 3947 §5)."""

    TUNNEL = 1
    TRANSPORT = 2
    UDP_ENCAPSULATED_TUNNEL = 3  # RFC 3947
    UDP_ENCAPSULATED_TRANSPORT = 4
    UDP_ENCAPSULATED_TUNNEL_DRAFT = 61443  # draft-ietf-ipsec-nat-t-ike-00..03
    UDP_ENCAPSULATED_TRANSPORT_DRAFT = 61444


class Ikev1LifeType(IntEnum):
    """Life Type (phase 1) / SA Life Type (IPsec DOI) values."""

    SECONDS = 1
    KILOBYTES = 2


class Ikev1EncrAlgorithm(IntEnum):
    """IKE "Encryption Algorithm" attribute values (RFC 2409 App. A, RFC 3602, RFC 4312)."""

    DES_CBC = 1
    IDEA_CBC = 2
    BLOWFISH_CBC = 3
    RC5_R16_B64_CBC = 4
    TRIPLEDES_CBC = 5  # "3DES-CBC" in the registry (a name cannot start with a digit)
    CAST_CBC = 6
    AES_CBC = 7
    CAMELLIA_CBC = 8


class Ikev1HashAlgorithm(IntEnum):
    """IKE "Hash Algorithm" attribute values."""

    MD5 = 1
    SHA = 2
    TIGER = 3
    SHA2_256 = 4
    SHA2_384 = 5
    SHA2_512 = 6


class Ikev1AuthMethod(IntEnum):
    """IKE "Authentication Method" attribute values, with the XAUTH/hybrid private-use values
    (draft-ietf-ipsec-isakmp-xauth, draft-ietf-ipsra-isakmp-hybrid-auth)."""

    PRE_SHARED_KEY = 1
    DSS_SIGNATURES = 2
    RSA_SIGNATURES = 3
    ENCRYPTION_WITH_RSA = 4
    REVISED_ENCRYPTION_WITH_RSA = 5
    ECDSA_SHA_256_P_256 = 9  # RFC 4754
    ECDSA_SHA_384_P_384 = 10
    ECDSA_SHA_512_P_521 = 11
    HYBRID_INIT_RSA = 64221
    HYBRID_RESP_RSA = 64222
    HYBRID_INIT_DSS = 64223
    HYBRID_RESP_DSS = 64224
    XAUTH_INIT_PRESHARED = 65001
    XAUTH_RESP_PRESHARED = 65002
    XAUTH_INIT_DSS = 65003
    XAUTH_RESP_DSS = 65004
    XAUTH_INIT_RSA = 65005
    XAUTH_RESP_RSA = 65006
    XAUTH_INIT_RSA_ENCRYPTION = 65007
    XAUTH_RESP_RSA_ENCRYPTION = 65008
    XAUTH_INIT_RSA_REVISED_ENCRYPTION = 65009
    XAUTH_RESP_RSA_REVISED_ENCRYPTION = 65010


class Ikev1GroupType(IntEnum):
    MODP = 1
    ECP = 2
    EC2N = 3


class Ikev1ProtocolId(IntEnum):
    """ISAKMP/IPsec DOI "Protocol Identifiers" (RFC 2407 §4.4.1)."""

    RESERVED = 0
    PROTO_ISAKMP = 1
    PROTO_IPSEC_AH = 2
    PROTO_IPSEC_ESP = 3
    PROTO_IPCOMP = 4
    PROTO_GIGABEAM_RADIO = 5


class Ikev1IsakmpTransformId(IntEnum):
    KEY_IKE = 1


class Ikev1IpsecTransformId(IntEnum):
    """IPsec DOI "IPSEC ESP Transform Identifiers" (RFC 2407 §4.4.4 and later RFCs)."""

    ESP_DES_IV64 = 1
    ESP_DES = 2
    ESP_3DES = 3
    ESP_RC5 = 4
    ESP_IDEA = 5
    ESP_CAST = 6
    ESP_BLOWFISH = 7
    ESP_3IDEA = 8
    ESP_DES_IV32 = 9
    ESP_RC4 = 10
    ESP_NULL = 11
    ESP_AES = 12  # AES-CBC, RFC 3602
    ESP_AES_CTR = 13
    ESP_AES_CCM_8 = 14
    ESP_AES_CCM_12 = 15
    ESP_AES_CCM_16 = 16
    ESP_AES_GCM_8 = 18
    ESP_AES_GCM_12 = 19
    ESP_AES_GCM_16 = 20
    ESP_SEED_CBC = 21
    ESP_CAMELLIA = 22
    ESP_NULL_AUTH_AES_GMAC = 23


class Ikev1AhTransformId(IntEnum):
    """IPsec DOI "IPSEC AH Transform Identifiers" (RFC 2407 §4.4.3)."""

    AH_MD5 = 2
    AH_SHA = 3
    AH_DES = 4
    AH_SHA2_256 = 5
    AH_SHA2_384 = 6
    AH_SHA2_512 = 7
    AH_RIPEMD = 8
    AH_AES_XCBC_MAC = 9
    AH_RSA = 10
    AH_AES_128_GMAC = 11
    AH_AES_192_GMAC = 12
    AH_AES_256_GMAC = 13


class Ikev1IpcompTransformId(IntEnum):
    IPCOMP_OUI = 1
    IPCOMP_DEFLATE = 2
    IPCOMP_LZS = 3
    IPCOMP_LZJH = 4


class Ikev1AuthAlgorithm(IntEnum):
    """IPsec DOI "Authentication Algorithm" attribute values (RFC 2407 §4.5)."""

    HMAC_MD5 = 1
    HMAC_SHA = 2
    DES_MAC = 3
    KPDK = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7
    HMAC_RIPEMD = 8
    AES_XCBC_MAC = 9
    SIG_RSA = 10
    AES_128_GMAC = 11
    AES_192_GMAC = 12
    AES_256_GMAC = 13


class Ikev1IdType(IntEnum):
    """IPsec DOI "Identification Type Values" (RFC 2407 §4.6.2.1)."""

    ID_IPV4_ADDR = 1
    ID_FQDN = 2
    ID_USER_FQDN = 3
    ID_IPV4_ADDR_SUBNET = 4
    ID_IPV6_ADDR = 5
    ID_IPV6_ADDR_SUBNET = 6
    ID_IPV4_ADDR_RANGE = 7
    ID_IPV6_ADDR_RANGE = 8
    ID_DER_ASN1_DN = 9
    ID_DER_ASN1_GN = 10
    ID_KEY_ID = 11
    ID_LIST = 12


class Ikev1CertEncoding(IntEnum):
    """ISAKMP "Certificate Type" (RFC 2408 §3.9)."""

    PKCS7_WRAPPED_X509 = 1
    PGP_CERTIFICATE = 2
    DNS_SIGNED_KEY = 3
    X509_CERTIFICATE_SIGNATURE = 4
    X509_CERTIFICATE_KEY_EXCHANGE = 5
    KERBEROS_TOKENS = 6
    CERTIFICATE_REVOCATION_LIST = 7
    AUTHORITY_REVOCATION_LIST = 8
    SPKI_CERTIFICATE = 9
    X509_CERTIFICATE_ATTRIBUTE = 10


class Ikev1CfgType(IntEnum):
    """Config Mode (Transaction exchange) message types (draft-dukes-ike-mode-cfg §3.2)."""

    ISAKMP_CFG_REQUEST = 1
    ISAKMP_CFG_REPLY = 2
    ISAKMP_CFG_SET = 3
    ISAKMP_CFG_ACK = 4


class Ikev1ConfigAttribute(IntEnum):
    """Config Mode attribute types, with XAUTH (draft-beaulieu-ike-xauth) and Cisco Unity ones."""

    INTERNAL_IP4_ADDRESS = 1
    INTERNAL_IP4_NETMASK = 2
    INTERNAL_IP4_DNS = 3
    INTERNAL_IP4_NBNS = 4
    INTERNAL_ADDRESS_EXPIRY = 5
    INTERNAL_IP4_DHCP = 6
    APPLICATION_VERSION = 7
    INTERNAL_IP6_ADDRESS = 8
    INTERNAL_IP6_NETMASK = 9
    INTERNAL_IP6_DNS = 10
    INTERNAL_IP6_NBNS = 11
    INTERNAL_IP6_DHCP = 12
    INTERNAL_IP4_SUBNET = 13
    SUPPORTED_ATTRIBUTES = 14
    INTERNAL_IP6_SUBNET = 15
    XAUTH_TYPE = 16520
    XAUTH_USER_NAME = 16521
    XAUTH_USER_PASSWORD = 16522
    XAUTH_PASSCODE = 16523
    XAUTH_MESSAGE = 16524
    XAUTH_CHALLENGE = 16525
    XAUTH_DOMAIN = 16526
    XAUTH_STATUS = 16527
    XAUTH_NEXT_PIN = 16528
    XAUTH_ANSWER = 16529
    UNITY_BANNER = 28672
    UNITY_SAVE_PASSWD = 28673
    UNITY_DEF_DOMAIN = 28674
    UNITY_SPLIT_DOMAIN = 28675
    UNITY_SPLIT_INCLUDE = 28676
    UNITY_NATT_PORT = 28677
    UNITY_SPLIT_EXCLUDE = 28678
    UNITY_PFS = 28679
    UNITY_FW_TYPE = 28680
    UNITY_BACKUP_SERVERS = 28681
    UNITY_DDNS_HOSTNAME = 28682


class Ikev1Doi(IntEnum):
    ISAKMP = 0
    IPSEC = 1  # RFC 2407
    GDOI = 2  # RFC 6407
