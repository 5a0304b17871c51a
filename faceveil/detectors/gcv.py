"""Google Cloud Vision face detection: a cloud detector that sends every image to Google.

Opt-in only (``--allow-cloud`` / ``FACEVEIL_ALLOW_CLOUD=1``), with Application Default Credentials.
Each image is sent as a JPEG under the request size limit (shrunk when needed); the face box is the
``fd_bounding_poly`` (see ``GoogleVision``), mapped back to the original image's pixels. Transient
errors are retried with the client library's own defaults; any other error fails that one file closed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faceveil.detectors.base import DetectorInfo, register
from faceveil.detectors.cloud import Encoded, as_rgb, encode_jpeg, require_cloud_allowed
from faceveil.errors import InputError, MissingExtraError, UsageError
from faceveil.types import Face

SERVICE = "Google Cloud Vision"
EXTRA = "gcv"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
GRPC_MAX_BYTES = 19_000_000
"""Image bytes per request over gRPC (the default transport): the service takes up to 20 MB, less headroom."""
REST_MAX_BYTES = 7_000_000
"""Over REST the JSON request is limited to 10 MB and the image is base64 (4/3 larger) inside it."""
MAX_RESULTS = 100
"""Faces asked for per image (the API returns only 10 when ``max_results`` is not given)."""
LANDMARKS = ("LEFT_EYE", "RIGHT_EYE", "NOSE_TIP", "MOUTH_LEFT", "MOUTH_RIGHT")
"""Vision's landmarks in faceveil's order; Vision's left and right are as seen by the viewer."""


def _import_sdk() -> tuple[Any, Any, Any, Any]:
    try:
        import google.auth.exceptions
        from google.api_core import exceptions, gapic_v1
        from google.cloud import vision
    except ImportError as exc:
        raise MissingExtraError("the 'gcv' detector (package 'google-cloud-vision')", EXTRA) from exc
    return vision, exceptions, gapic_v1, google.auth.exceptions


def make_client() -> Any:
    """An ImageAnnotatorClient with Application Default Credentials, or UsageError when there are none."""
    vision, _, _, auth_errors = _import_sdk()
    import google.auth

    try:
        credentials, _project = google.auth.default(scopes=list(SCOPES))
    except auth_errors.GoogleAuthError as exc:
        raise UsageError(
            f"no Google Cloud credentials found for {SERVICE}: run `gcloud auth application-default "
            "login` or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from exc
    return vision.ImageAnnotatorClient(credentials=credentials)


class GoogleVision:
    """Faces from Google Cloud Vision's FACE_DETECTION feature.

    The box is ``fd_bounding_poly``, not ``bounding_poly``: the former is the face detector's own
    tight box around the skin of the face, like the boxes of the local detectors (so fusion and the
    mask ``margin`` mean the same thing for every detector); the latter is a larger frame built from
    the landmarks "in accordance with human expectations" and would add a second margin on top of
    faceveil's. ``bounding_poly`` is used only when a face comes without ``fd_bounding_poly``.

    ``client`` may be any ``ImageAnnotatorClient`` (tests pass one whose transport is mocked).
    """

    def __init__(
        self,
        threshold: float = 0.5,
        client: Any = None,
        max_results: int = MAX_RESULTS,
        max_bytes: int | None = None,
        threads: int | None = None,
        name: str = "gcv",
    ) -> None:
        require_cloud_allowed(SERVICE)
        self._vision, self._api_errors, self._gapic, self._auth_errors = _import_sdk()
        self._client = make_client() if client is None else client
        if max_bytes is None:
            kind = str(getattr(getattr(self._client, "transport", None), "kind", "grpc"))
            max_bytes = GRPC_MAX_BYTES if kind.startswith("grpc") else REST_MAX_BYTES
        self.threshold = threshold
        self.max_results = max_results
        self.max_bytes = max_bytes
        self.name = name

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Faces in an RGB uint8 image, boxes in its pixels; a service error raises InputError."""
        thr = self.threshold if threshold is None else threshold
        encoded = encode_jpeg(as_rgb(rgb), self.max_bytes)
        response = self._call(encoded.data)
        if response.error.code or response.error.message:
            reason = response.error.message or f"error code {response.error.code}"
            raise InputError(f"{SERVICE} could not process the image: {reason}")
        faces = []
        for face in response.face_annotations:
            score = min(1.0, max(0.0, float(face.detection_confidence)))
            if score < thr:
                continue
            box = _box(face.fd_bounding_poly, encoded) or _box(face.bounding_poly, encoded)
            if box is None:
                continue
            faces.append(Face(box, score, self.name, _landmarks(face.landmarks, encoded)))
        return faces

    def _call(self, data: bytes) -> Any:
        # The face_detection() helper passes retry=None and timeout=None down to the RPC unless told
        # otherwise, which turns the library's default retry policy off; ask for the defaults explicitly.
        default = self._gapic.method.DEFAULT
        try:
            return self._client.face_detection(
                image=self._vision.Image(content=data),
                max_results=self.max_results,
                retry=default,
                timeout=default,
            )
        except self._api_errors.GoogleAPIError as exc:
            raise InputError(f"{SERVICE} request failed: {exc}") from exc
        except self._auth_errors.GoogleAuthError as exc:
            raise InputError(f"{SERVICE} could not authenticate: {exc}") from exc


def _box(poly: Any, encoded: Encoded) -> tuple[float, float, float, float] | None:
    """x, y, w, h in the original image's pixels from a bounding polygon in the sent image's pixels.

    A side of a face cut by the right or bottom edge may come without coordinates (read as 0): the
    polygon's vertices go top-left, top-right, bottom-right, bottom-left, so such a side is taken as
    the image edge rather than as 0.
    """
    vs = list(poly.vertices)
    if not vs:
        return None
    xs = [float(v.x) for v in vs]
    ys = [float(v.y) for v in vs]
    if len(vs) == 4:
        if vs[1].x == vs[2].x == 0 < vs[0].x:
            xs = [float(vs[0].x), float(vs[3].x), float(encoded.width)]
        if vs[2].y == vs[3].y == 0 < vs[0].y:
            ys = [float(vs[0].y), float(vs[1].y), float(encoded.height)]
    left, top, right, bottom = min(xs), min(ys), max(xs), max(ys)
    if right <= left or bottom <= top:
        return None
    sx, sy = encoded.scale_x, encoded.scale_y
    return (left * sx, top * sy, (right - left) * sx, (bottom - top) * sy)


def _landmarks(marks: Any, encoded: Encoded) -> tuple[tuple[float, float], ...] | None:
    """The five landmarks in faceveil's order, in the original image's pixels; None unless all are present."""
    found = {}
    for mark in marks:
        kind = getattr(mark.type_, "name", str(mark.type_))
        found[kind] = mark.position
    if not all(t in found for t in LANDMARKS):
        return None
    sx, sy = encoded.scale_x, encoded.scale_y
    return tuple((float(found[t].x) * sx, float(found[t].y) * sy) for t in LANDMARKS)


register(
    DetectorInfo(
        name="gcv",
        factory=lambda threads=None: GoogleVision(threads=threads),
        summary="Google Cloud Vision face detection (cloud: sends every image to Google; --allow-cloud)",
        weights="none: a hosted service; Application Default Credentials",
        licence="proprietary service under the Google Cloud terms (google-cloud-vision: Apache-2.0)",
        extra="faceveil[gcv]",
        requires=("google.cloud.vision",),
    )
)
