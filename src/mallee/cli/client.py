"""A signed client for Mallee's administrator actions (Eucalyptus' extensions that botocore's models
do not know): builds a Query request, signs it with SigV4 as any AWS client would, parses the XML."""

from __future__ import annotations

import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import ProfileNotFound

API_VERSIONS = {"ec2": "2016-11-15", "iam": "2010-05-08", "sts": "2011-06-15"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.status, self.code, self.message = status, code, message


@dataclass
class AdminClient:
    credentials: ReadOnlyCredentials
    endpoint_url: str
    region: str

    @classmethod
    def from_profile(cls, profile: str) -> AdminClient:
        try:
            session = boto3.Session(profile_name=profile)
        except ProfileNotFound as exc:
            raise ApiError(
                0, "ProfileNotFound", f"no aws profile '{profile}' (has `mallee up` run here?)"
            ) from exc
        endpoint = session._session.get_scoped_config().get("endpoint_url")
        if not endpoint:
            raise ApiError(0, "NoEndpoint", f"profile '{profile}' has no endpoint_url")
        credentials = session.get_credentials()
        if credentials is None:
            raise ApiError(0, "NoCredentials", f"profile '{profile}' has no credentials")
        return cls(credentials.get_frozen_credentials(), endpoint, session.region_name or "mallee-1")

    def call(self, service: str, action: str, params: dict[str, Any] | None = None) -> ET.Element:
        form = {"Action": action, "Version": API_VERSIONS[service]}
        form.update({k: str(v) for k, v in (params or {}).items()})
        body = urlencode(form)
        request = AWSRequest(
            method="POST",
            url=self.endpoint_url.rstrip("/") + "/",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        )
        SigV4Auth(self.credentials, service, self.region).add_auth(request)
        prepared = request.prepare()
        http_request = urllib.request.Request(
            prepared.url, data=body.encode(), method="POST", headers=dict(prepared.headers.items())
        )
        try:
            with urllib.request.urlopen(http_request, timeout=30) as response:
                return _strip_namespaces(ET.fromstring(response.read()))
        except urllib.error.HTTPError as exc:
            raise _error(exc.code, exc.read()) from None
        except urllib.error.URLError as exc:
            raise ApiError(0, "ConnectionError", f"cannot reach {self.endpoint_url}: {exc.reason}") from None


def _strip_namespaces(root: ET.Element) -> ET.Element:
    for el in root.iter():
        if "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]
    return root


def _error(status: int, body: bytes) -> ApiError:
    try:
        root = _strip_namespaces(ET.fromstring(body))
    except ET.ParseError:
        return ApiError(status, "HTTP" + str(status), body.decode(errors="replace")[:200])
    return ApiError(status, root.findtext(".//Code") or "Error", root.findtext(".//Message") or "")
