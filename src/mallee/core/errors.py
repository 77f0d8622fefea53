"""AWS errors: one exception type and one table from error code to HTTP status."""

from __future__ import annotations

# The HTTP status AWS answers with for each error code we raise. Codes not listed are 400
# (client errors); server faults are listed explicitly. Sources: the "Common errors" pages of the
# EC2, IAM and STS API references, and the S3 error-code list.
STATUS: dict[str, int] = {
    # common (query and ec2 protocols)
    "AccessDenied": 403,
    "AuthFailure": 401,
    "IncompleteSignature": 400,
    "InternalError": 500,
    "InternalFailure": 500,
    "InvalidAction": 400,
    "InvalidClientTokenId": 403,
    "InvalidParameterCombination": 400,
    "InvalidParameterValue": 400,
    "InvalidQueryParameter": 400,
    "MalformedQueryString": 404,
    "MissingAction": 400,
    "MissingAuthenticationToken": 403,
    "MissingParameter": 400,
    "NotImplemented": 501,
    "OptInRequired": 403,
    "RequestExpired": 400,
    "ServiceUnavailable": 503,
    "DryRunOperation": 412,
    "SlowDown": 503,
    "RequestLimitExceeded": 503,
    "SignatureDoesNotMatch": 403,
    "Throttling": 400,
    "UnauthorizedOperation": 403,
    "UnsupportedOperation": 400,
    "UnsupportedProtocol": 400,
    "ValidationError": 400,
    "RequestEntityTooLarge": 413,
    "RequestHeaderSectionTooLarge": 400,
    "InvalidURI": 400,
    "MissingRequestBodyError": 400,
    "AuthorizationHeaderMalformed": 400,
    "RequestTimeTooSkewed": 403,
    "InvalidToken": 400,
    # IAM
    "NoSuchEntity": 404,
    "EntityAlreadyExists": 409,
    "DeleteConflict": 409,
    "LimitExceeded": 409,
    "MalformedPolicyDocument": 400,
    "ServiceFailure": 500,
    # STS
    "ExpiredToken": 400,
    "InvalidAuthorizationMessageException": 400,
    "RegionDisabledException": 403,
    # S3 (protocol-level ones; Walrus adds its own when it needs them)
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidRequest": 400,
    "MalformedXML": 400,
    "MaxMessageLengthExceeded": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "InvalidDigest": 400,
    "BadDigest": 400,
    "XAmzContentSHA256Mismatch": 400,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
}


class CloudError(Exception):
    """An error answered to the client with an AWS error code.

    `status` defaults to the table above (400 for codes it does not list). Handlers raise this and
    nothing else for client mistakes; anything else that escapes a handler is an InternalError (500).
    """

    def __init__(
        self,
        code: str,
        message: str = "",
        status: int | None = None,
        headers: list[tuple[str, str]] | None = None,
        details: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status if status is not None else STATUS.get(code, 400)
        self.headers = list(headers or [])  # extra response headers (S3: x-amz-delete-marker)
        # More elements of S3's error document, after Message: <Key>, <BucketName>, <UploadId>…
        self.details = dict(details or {})

    @property
    def is_server_fault(self) -> bool:
        return self.status >= 500


class ConfigError(Exception):
    """The configuration or data directory is unusable; the message says how to fix it."""
