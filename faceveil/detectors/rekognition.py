"""Amazon Rekognition DetectFaces: a cloud detector that sends every image to AWS.

Opt-in only (``--allow-cloud`` / ``FACEVEIL_ALLOW_CLOUD=1``), with credentials from the usual AWS
chain. Each image is sent as a JPEG of at most 5 MB (shrunk when needed); boxes come back relative to
the image and are mapped to the original image's pixels. Throttling is retried by botocore (adaptive
retry mode); any other error fails that one file closed.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from faceveil.detectors.base import DetectorInfo, register
from faceveil.detectors.cloud import as_rgb, encode_jpeg, require_cloud_allowed
from faceveil.errors import InputError, MissingExtraError, UsageError
from faceveil.types import Face

SERVICE = "Amazon Rekognition"
EXTRA = "rekognition"
MAX_BYTES = 5_000_000
"""DetectFaces takes at most 5 MB of image bytes (the decimal reading, to stay on the safe side)."""
RETRIES: dict[str, Any] = {"max_attempts": 5, "mode": "adaptive"}
"""botocore's retry settings: up to 5 retries, with client-side rate limiting after throttling."""
LANDMARKS = ("eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight")
"""Rekognition's five DEFAULT landmarks in faceveil's order (left and right as seen in the image)."""


def _import_sdk() -> tuple[Any, Any]:
    try:
        import boto3
        import botocore.exceptions
    except ImportError as exc:
        raise MissingExtraError("the 'rekognition' detector (package 'boto3')", EXTRA) from exc
    return boto3, botocore.exceptions


def retry_config() -> Any:
    """The botocore ``Config`` every client made here uses."""
    from botocore.config import Config

    return Config(retries=dict(RETRIES))


def make_client(region_name: str | None = None) -> Any:
    """A Rekognition client from the usual AWS chain, or UsageError when credentials or region are missing."""
    boto3, errors = _import_sdk()
    try:
        session = boto3.Session(region_name=region_name)
        credentials = session.get_credentials()
    except errors.BotoCoreError as exc:
        raise UsageError(f"cannot read the AWS configuration for {SERVICE}: {exc}") from exc
    if credentials is None:
        raise UsageError(
            f"no AWS credentials found for {SERVICE}: configure them as for the AWS CLI "
            "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials, SSO "
            "or an instance role)"
        )
    # boto3 reads AWS_DEFAULT_REGION and the config file; AWS_REGION (what other AWS SDKs read) is a fallback
    region = session.region_name or os.environ.get("AWS_REGION")
    if not region:
        raise UsageError(
            f"no AWS region set for {SERVICE}: set AWS_DEFAULT_REGION (or AWS_REGION) "
            "or a region in ~/.aws/config"
        )
    return session.client("rekognition", region_name=region, config=retry_config())


class Rekognition:
    """Faces from Amazon Rekognition DetectFaces (at most the 100 largest faces of an image).

    ``client`` may be any boto3 Rekognition client (tests pass one wrapped in botocore's Stubber);
    without one, a client is built from the usual AWS credential chain with ``retry_config()``.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        client: Any = None,
        region_name: str | None = None,
        max_bytes: int = MAX_BYTES,
        threads: int | None = None,
        name: str = "rekognition",
    ) -> None:
        require_cloud_allowed(SERVICE)
        _, self._errors = _import_sdk()
        self._client = make_client(region_name) if client is None else client
        self.threshold = threshold
        self.max_bytes = max_bytes
        self.name = name

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Faces in an RGB uint8 image, boxes in its pixels; a service error raises InputError."""
        thr = self.threshold if threshold is None else threshold
        rgb = as_rgb(rgb)
        height, width = rgb.shape[:2]
        encoded = encode_jpeg(rgb, self.max_bytes)
        response = self._call(encoded.data)
        faces = []
        # Rekognition's boxes and landmarks are ratios of the image sent, so multiplying by the
        # ORIGINAL size undoes any shrinking done to fit the byte limit.
        for detail in response.get("FaceDetails", []):
            box = detail.get("BoundingBox")
            if not box:
                continue
            score = min(1.0, max(0.0, float(detail.get("Confidence", 0.0)) / 100.0))
            if score < thr:
                continue
            bbox = (
                float(box.get("Left", 0.0)) * width,
                float(box.get("Top", 0.0)) * height,
                float(box.get("Width", 0.0)) * width,
                float(box.get("Height", 0.0)) * height,
            )
            faces.append(Face(bbox, score, self.name, _landmarks(detail.get("Landmarks"), width, height)))
        return faces

    def _call(self, data: bytes) -> dict[str, Any]:
        try:
            return self._client.detect_faces(Image={"Bytes": data}, Attributes=["DEFAULT"])
        except self._errors.ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "error")
            message = error.get("Message") or str(exc)
            retries = exc.response.get("ResponseMetadata", {}).get("RetryAttempts") or 0
            after = f" after {retries} retries" if retries else ""
            raise InputError(f"{SERVICE} refused the image ({code}{after}): {message}") from exc
        except self._errors.BotoCoreError as exc:
            raise InputError(f"{SERVICE} could not be reached: {exc}") from exc


def _landmarks(
    marks: list[dict[str, Any]] | None, width: int, height: int
) -> tuple[tuple[float, float], ...] | None:
    """The five DEFAULT landmarks in faceveil's order, in pixels; None unless all five are present."""
    found = {m.get("Type"): m for m in marks or ()}
    if not all(t in found for t in LANDMARKS):
        return None
    return tuple((float(found[t]["X"]) * width, float(found[t]["Y"]) * height) for t in LANDMARKS)


register(
    DetectorInfo(
        name="rekognition",
        factory=lambda threads=None: Rekognition(threads=threads),
        summary="Amazon Rekognition DetectFaces (cloud: sends every image to AWS; --allow-cloud)",
        weights="none: a hosted service; credentials from the usual AWS chain",
        licence="proprietary service under the AWS terms (boto3: Apache-2.0)",
        extra="faceveil[rekognition]",
        requires=("boto3",),
    )
)
