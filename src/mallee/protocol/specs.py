"""The botocore service models, plus Mallee's own extensions, as the single API specification.

botocore ships a JSON model per service (`botocore/data/<name>/<version>/service-2.json`) that
describes every operation's wire format. The protocol layer (parser, serializer) is driven by
these models only, so supporting a new AWS operation never needs protocol code.

Eucalyptus had a few administrative operations AWS never had (accounts in IAM, service status
and instance-type editing in EC2). They are described in the same model format in
`patches/<name>.json` and deep-merged into the loaded model, so clients built with the patched
model (and our server) treat them like any other operation.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

from botocore.loaders import Loader
from botocore.model import OperationModel, ServiceModel

PATCH_DIR = Path(__file__).with_name("patches")


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Return `base` with `patch` merged in: dicts merge recursively, anything else replaces.

    Neither argument is modified (botocore's loader caches what it returns).
    """
    merged = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_model_dict(name: str) -> dict[str, Any]:
    """The raw model of service `name` (latest API version) with our patch merged in."""
    model: dict[str, Any] = Loader().load_service_model(name, "service-2")
    patch_file = PATCH_DIR / f"{name}.json"
    if patch_file.is_file():
        model = deep_merge(model, json.loads(patch_file.read_text(encoding="utf-8")))
    return model


@functools.cache
def load_service(name: str) -> ServiceModel:
    """The (patched) botocore model of service `name`: "ec2", "iam", "sts", "s3"…"""
    return ServiceModel(load_model_dict(name), service_name=name)


@functools.cache
def _operation_names(name: str) -> frozenset[str]:
    return frozenset(load_service(name).operation_names)


def operation_for_action(service_name: str, action: str) -> OperationModel | None:
    """The operation called `action` (an `Action=` value) in the service, or None."""
    if action not in _operation_names(service_name):
        return None
    return load_service(service_name).operation_model(action)
