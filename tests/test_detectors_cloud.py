"""The cloud detectors (Amazon Rekognition, Google Cloud Vision) against the SDKs' own stubbing.

Nothing here reaches the internet: Rekognition clients are real boto3 clients wrapped in botocore's
``Stubber`` (or answered by a ``before-send`` hook, so botocore's real retry handler runs), and the
Vision client is a real ``ImageAnnotatorClient`` whose gRPC transport callable is mocked, as in
google-cloud-vision's own unit tests. Responses follow the documented shapes; the live services
were not exercised.
"""

from __future__ import annotations

import json
import sys
import types
from unittest import mock

import cv2
import numpy as np
import pytest

from faceveil.detectors import cloud, gcv, rekognition
from faceveil.detectors.base import registered
from faceveil.errors import InputError, MissingExtraError, UsageError

boto3 = pytest.importorskip("boto3")
stub = pytest.importorskip("botocore.stub")
vision = pytest.importorskip("google.cloud.vision")
api_exceptions = pytest.importorskip("google.api_core.exceptions")
ga_credentials = pytest.importorskip("google.auth.credentials")

# The astronaut's face in tests/conftest.py: about x 178-270, y 58-177 of a 512 x 512 image.
FACE = (178.0, 58.0, 92.0, 119.0)


@pytest.fixture
def allow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cloud.ALLOW_ENV, "1")


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No AWS credentials anywhere: empty config files, no AWS_* variables, no instance metadata."""
    for key in list(__import__("os").environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    (tmp_path / "credentials").write_text("")
    (tmp_path / "config").write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "the bytes sent are not a decodable image"
    return img


def noise(height: int, width: int) -> np.ndarray:
    """Random pixels: the worst case for JPEG, so a big one cannot fit the byte limit at full size."""
    return np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --------------------------------------------------------------------------------------------------
# shared helpers


def test_cloud_must_be_enabled_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cloud.ALLOW_ENV, raising=False)
    assert not cloud.cloud_allowed()
    for value in ("0", "", "no", "false"):
        monkeypatch.setenv(cloud.ALLOW_ENV, value)
        assert not cloud.cloud_allowed()
    monkeypatch.setenv(cloud.ALLOW_ENV, "1")
    assert cloud.cloud_allowed()


def test_encode_jpeg_fits_small_image_unchanged(astronaut: np.ndarray) -> None:
    enc = cloud.encode_jpeg(astronaut, 5_000_000)
    assert (enc.width, enc.height) == (512, 512) and not enc.downscaled
    assert decode(enc.data).shape == (512, 512, 3)


def test_encode_jpeg_shrinks_to_fit_and_reports_scale() -> None:
    img = noise(900, 1200)
    enc = cloud.encode_jpeg(img, 200_000)
    assert len(enc.data) <= 200_000
    assert enc.downscaled and enc.width < 1200 and enc.height < 900
    assert decode(enc.data).shape == (enc.height, enc.width, 3)
    assert enc.scale_x == pytest.approx(1200 / enc.width) and enc.scale_y == pytest.approx(900 / enc.height)
    assert enc.scale_x == pytest.approx(enc.scale_y, rel=0.01)


def test_encode_jpeg_gives_up_with_input_error() -> None:
    with pytest.raises(InputError, match="at most 10 bytes"):
        cloud.encode_jpeg(noise(64, 64), 10)


def test_both_detectors_are_registered() -> None:
    known = registered()
    assert known["rekognition"].extra == "faceveil[rekognition]"
    assert known["gcv"].extra == "faceveil[gcv]"


# --------------------------------------------------------------------------------------------------
# Amazon Rekognition


def rek_client():
    return boto3.client(
        "rekognition", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    )


def rek_face(box: tuple[float, float, float, float], size: tuple[int, int], confidence: float) -> dict:
    """A FaceDetail in the documented DetectFaces shape (Attributes=["DEFAULT"]) for a pixel box."""
    x, y, w, h = box
    width, height = size
    marks = {
        "eyeLeft": (x + 0.3 * w, y + 0.4 * h),
        "eyeRight": (x + 0.7 * w, y + 0.4 * h),
        "mouthLeft": (x + 0.35 * w, y + 0.8 * h),
        "mouthRight": (x + 0.65 * w, y + 0.8 * h),
        "nose": (x + 0.5 * w, y + 0.6 * h),
    }
    return {
        "BoundingBox": {"Width": w / width, "Height": h / height, "Left": x / width, "Top": y / height},
        "Landmarks": [{"Type": t, "X": px / width, "Y": py / height} for t, (px, py) in marks.items()],
        "Pose": {"Roll": -2.1, "Yaw": 10.3, "Pitch": 4.5},
        "Quality": {"Brightness": 72.1, "Sharpness": 86.8},
        "Confidence": confidence,
    }


def capture_bytes(client) -> list[bytes]:
    """The image bytes of every DetectFaces call, captured from the parameters the client was given."""
    sent: list[bytes] = []
    client.meta.events.register(
        "provide-client-params.rekognition.DetectFaces",
        lambda params, **_: sent.append(params["Image"]["Bytes"]),
    )
    return sent


def test_rekognition_pixel_boxes_on_astronaut(allow, astronaut: np.ndarray) -> None:
    client = rek_client()
    sent = capture_bytes(client)
    response = {
        "FaceDetails": [rek_face(FACE, (512, 512), 99.97), rek_face((10, 400, 30, 30), (512, 512), 31.0)],
        "OrientationCorrection": "ROTATE_0",
    }
    with stub.Stubber(client) as stubber:
        stubber.add_response(
            "detect_faces", response, {"Image": {"Bytes": stub.ANY}, "Attributes": ["DEFAULT"]}
        )
        faces = rekognition.Rekognition(client=client).detect(astronaut)
        stubber.assert_no_pending_responses()
    assert len(faces) == 1  # the 31 % face is below the default threshold 0.5
    face = faces[0]
    assert face.detector == "rekognition"
    assert face.score == pytest.approx(0.9997)
    assert face.bbox == pytest.approx(FACE)
    assert face.landmarks is not None and len(face.landmarks) == 5
    (lx, _), (rx, _), (nx, ny), (mlx, _), (mrx, _) = face.landmarks
    assert lx == pytest.approx(178 + 0.3 * 92) and rx == pytest.approx(178 + 0.7 * 92)
    assert ny == pytest.approx(58 + 0.6 * 119) and mlx < nx < mrx
    assert decode(sent[0]).shape == (512, 512, 3)


def test_rekognition_threshold_argument(allow, astronaut: np.ndarray) -> None:
    client = rek_client()
    response = {
        "FaceDetails": [rek_face(FACE, (512, 512), 99.0), rek_face((10, 400, 30, 30), (512, 512), 31.0)]
    }
    with stub.Stubber(client) as stubber:
        stubber.add_response("detect_faces", response)
        stubber.add_response("detect_faces", response)
        det = rekognition.Rekognition(client=client)
        assert len(det.detect(astronaut, threshold=0.3)) == 2
        assert len(det.detect(astronaut, threshold=0.995)) == 0


def test_rekognition_downscaled_image_gives_original_pixels(allow) -> None:
    img = noise(3000, 4000)  # about 6.7 MB as JPEG even at quality 70: over the 5 MB limit
    client = rek_client()
    sent = capture_bytes(client)
    box = (1000.0, 600.0, 300.0, 400.0)
    with stub.Stubber(client) as stubber:
        stubber.add_response("detect_faces", {"FaceDetails": [rek_face(box, (4000, 3000), 97.0)]})
        faces = rekognition.Rekognition(client=client).detect(img)
    assert len(sent[0]) <= rekognition.MAX_BYTES
    h, w = decode(sent[0]).shape[:2]
    assert w < 4000 and h < 3000 and w / h == pytest.approx(4000 / 3000, rel=0.01)
    assert faces[0].bbox == pytest.approx(box)
    assert faces[0].landmarks[0] == pytest.approx((1000 + 0.3 * 300, 600 + 0.4 * 400))


@pytest.mark.parametrize(
    "code",
    [
        "InvalidImageFormatException",
        "ImageTooLargeException",
        "AccessDeniedException",
        "InvalidParameterException",
    ],
)
def test_rekognition_service_error_fails_the_file(allow, astronaut: np.ndarray, code: str) -> None:
    client = rek_client()
    with stub.Stubber(client) as stubber:
        stubber.add_client_error(
            "detect_faces", service_error_code=code, service_message="nope", http_status_code=400
        )
        det = rekognition.Rekognition(client=client)
        with pytest.raises(InputError, match=f"Amazon Rekognition refused the image \\({code}\\): nope"):
            det.detect(astronaut)


def test_rekognition_throttling_after_retries_fails_the_file(allow, astronaut: np.ndarray) -> None:
    # What botocore raises once its retries are spent (Stubber itself never retries).
    client = rek_client()
    with stub.Stubber(client) as stubber:
        stubber.add_client_error(
            "detect_faces",
            service_error_code="ProvisionedThroughputExceededException",
            service_message="Provisioned rate exceeded",
            http_status_code=400,
            response_meta={"RetryAttempts": 5},
        )
        with pytest.raises(InputError, match="ProvisionedThroughputExceededException after 5 retries"):
            rekognition.Rekognition(client=client).detect(astronaut)


def test_rekognition_client_is_built_with_adaptive_retries(allow, no_aws, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    det = rekognition.Rekognition()
    retries = det._client.meta.config.retries
    assert retries["mode"] == "adaptive"
    assert retries["total_max_attempts"] == 6  # botocore's max_attempts=5 counts retries after the first try
    assert det._client.meta.region_name == "eu-west-1"


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: object):
        yield self.body


def test_rekognition_throttling_is_retried_by_botocore(allow, no_aws, monkeypatch, astronaut) -> None:
    """A real client from the constructor, answered over botocore's ``before-send`` hook (no network):
    the first answer is a ThrottlingException, the second a success, and botocore's own retry handler
    must try again."""
    from botocore.awsrequest import AWSResponse

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    slept: list[float] = []
    monkeypatch.setattr("botocore.endpoint.time", types.SimpleNamespace(sleep=slept.append))
    answers = [
        (400, {"__type": "ThrottlingException", "message": "Rate exceeded"}),
        (200, {"FaceDetails": [rek_face(FACE, (512, 512), 99.0)]}),
    ]
    attempts: list[int] = []

    def send(request, **_):
        status, body = answers[len(attempts)]
        attempts.append(status)
        headers = {"Content-Type": "application/x-amz-json-1.1"}
        return AWSResponse(request.url, status, headers, _Raw(json.dumps(body).encode()))

    det = rekognition.Rekognition()
    det._client.meta.events.register("before-send.rekognition.DetectFaces", send)
    faces = det.detect(astronaut)
    assert attempts == [400, 200]
    assert len(slept) == 1  # one back-off between the two attempts
    assert faces[0].bbox == pytest.approx(FACE)


def test_rekognition_needs_explicit_opt_in(monkeypatch) -> None:
    monkeypatch.delenv(cloud.ALLOW_ENV, raising=False)
    with pytest.raises(UsageError, match="sending images to Amazon Rekognition must be enabled explicitly"):
        rekognition.Rekognition(client=rek_client())
    with pytest.raises(UsageError, match="--allow-cloud or set FACEVEIL_ALLOW_CLOUD=1"):
        registered()["rekognition"].factory(threads=None)


def test_rekognition_without_credentials_is_a_usage_error(allow, no_aws) -> None:
    with pytest.raises(UsageError, match="no AWS credentials found"):
        rekognition.Rekognition()


def test_rekognition_without_region_is_a_usage_error(allow, no_aws, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    with pytest.raises(UsageError, match="no AWS region"):
        rekognition.Rekognition()


def test_rekognition_missing_sdk_names_the_extra(allow, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'faceveil\[rekognition\]'"):
        rekognition.Rekognition()


# --------------------------------------------------------------------------------------------------
# Google Cloud Vision

Landmark = vision.FaceAnnotation.Landmark


def gcv_client():
    return vision.ImageAnnotatorClient(credentials=ga_credentials.AnonymousCredentials())


def poly(x: float, y: float, w: float, h: float):
    x0, y0, x1, y1 = round(x), round(y), round(x + w), round(y + h)
    return vision.BoundingPoly(
        vertices=[
            vision.Vertex(x=x0, y=y0),
            vision.Vertex(x=x1, y=y0),
            vision.Vertex(x=x1, y=y1),
            vision.Vertex(x=x0, y=y1),
        ]
    )


def gcv_face(box: tuple[float, float, float, float], confidence: float):
    """A FaceAnnotation in the documented shape: pixel polygons, 3-D landmark positions, likelihoods."""
    x, y, w, h = box
    marks = [
        (Landmark.Type.LEFT_OF_LEFT_EYEBROW, x + 0.2 * w, y + 0.3 * h),
        (Landmark.Type.RIGHT_EYE, x + 0.7 * w, y + 0.4 * h),
        (Landmark.Type.LEFT_EYE, x + 0.3 * w, y + 0.4 * h),
        (Landmark.Type.MIDPOINT_BETWEEN_EYES, x + 0.5 * w, y + 0.4 * h),
        (Landmark.Type.NOSE_TIP, x + 0.5 * w, y + 0.6 * h),
        (Landmark.Type.MOUTH_RIGHT, x + 0.65 * w, y + 0.8 * h),
        (Landmark.Type.MOUTH_LEFT, x + 0.35 * w, y + 0.8 * h),
        (Landmark.Type.CHIN_GNATHION, x + 0.5 * w, y + 1.0 * h),
    ]
    return vision.FaceAnnotation(
        bounding_poly=poly(x - 0.1 * w, y - 0.35 * h, 1.2 * w, 1.4 * h),
        fd_bounding_poly=poly(x, y, w, h),
        landmarks=[Landmark(type_=t, position=vision.Position(x=px, y=py, z=0.5)) for t, px, py in marks],
        roll_angle=-2.5,
        pan_angle=8.1,
        tilt_angle=1.2,
        detection_confidence=confidence,
        landmarking_confidence=0.61,
        joy_likelihood=vision.Likelihood.VERY_UNLIKELY,
        headwear_likelihood=vision.Likelihood.POSSIBLE,
    )


def batch(*faces, error=None):
    single = vision.AnnotateImageResponse(face_annotations=list(faces))
    if error is not None:
        single = vision.AnnotateImageResponse(error=error)
    return vision.BatchAnnotateImagesResponse(responses=[single])


def mock_rpc(client):
    """Mock the transport's batch_annotate_images callable, as google-cloud-vision's unit tests do."""
    return mock.patch.object(type(client.transport.batch_annotate_images), "__call__")


def test_gcv_pixel_boxes_on_astronaut(allow, astronaut: np.ndarray) -> None:
    client = gcv_client()
    with mock_rpc(client) as call:
        call.return_value = batch(gcv_face(FACE, 0.98), gcv_face((10, 400, 30, 30), 0.2))
        faces = gcv.GoogleVision(client=client).detect(astronaut)
    request = call.call_args.args[0].requests[0]
    assert [f.type_ for f in request.features] == [vision.Feature.Type.FACE_DETECTION]
    assert request.features[0].max_results == gcv.MAX_RESULTS
    assert decode(request.image.content).shape == (512, 512, 3)
    assert len(faces) == 1  # 0.2 is below the default threshold 0.5
    face = faces[0]
    assert face.detector == "gcv" and face.score == pytest.approx(0.98)
    assert face.bbox == pytest.approx(FACE, abs=0.5)  # fd_bounding_poly, not the larger bounding_poly
    (lx, _), (rx, _), (nx, ny), (mlx, _), (mrx, _) = face.landmarks
    assert lx == pytest.approx(178 + 0.3 * 92, abs=1e-3) and rx == pytest.approx(178 + 0.7 * 92, abs=1e-3)
    assert ny == pytest.approx(58 + 0.6 * 119, abs=1e-3) and mlx < nx < mrx


def test_gcv_downscaled_image_gives_original_pixels(allow) -> None:
    img = noise(1500, 2000)
    box = (500.0, 300.0, 400.0, 500.0)
    client = gcv_client()

    def answer(request, **_):
        # Answer in the pixels of the image actually sent, as the service would.
        sent = decode(request.requests[0].image.content)
        sx, sy = sent.shape[1] / 2000, sent.shape[0] / 1500
        return batch(gcv_face((box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy), 0.9))

    with mock_rpc(client) as call:
        call.side_effect = answer
        faces = gcv.GoogleVision(client=client, max_bytes=1_000_000).detect(img)
    content = call.call_args.args[0].requests[0].image.content
    assert len(content) <= 1_000_000 and decode(content).shape[1] < 2000
    # Vertices are whole pixels of the smaller image: about one original pixel per side of rounding.
    assert faces[0].bbox == pytest.approx(box, abs=3.0)
    assert faces[0].landmarks[2] == pytest.approx((700.0, 600.0), abs=1.0)


def test_gcv_default_byte_limit_follows_the_transport(allow) -> None:
    assert gcv.GoogleVision(client=gcv_client()).max_bytes == gcv.GRPC_MAX_BYTES
    rest = vision.ImageAnnotatorClient(credentials=ga_credentials.AnonymousCredentials(), transport="rest")
    assert gcv.GoogleVision(client=rest).max_bytes == gcv.REST_MAX_BYTES


def test_gcv_error_response_fails_the_file(allow, astronaut: np.ndarray) -> None:
    from google.rpc import status_pb2

    client = gcv_client()
    with mock_rpc(client) as call:
        call.return_value = batch(error=status_pb2.Status(code=3, message="Bad image data."))
        with pytest.raises(InputError, match=r"could not process the image: Bad image data\."):
            gcv.GoogleVision(client=client).detect(astronaut)


@pytest.mark.parametrize(
    "error",
    [
        api_exceptions.PermissionDenied("Cloud Vision API has not been used"),
        api_exceptions.InvalidArgument("too big"),
    ],
)
def test_gcv_rpc_error_fails_the_file(allow, astronaut: np.ndarray, error) -> None:
    client = gcv_client()
    with mock_rpc(client) as call:
        call.side_effect = error
        with pytest.raises(InputError, match="Google Cloud Vision request failed"):
            gcv.GoogleVision(client=client).detect(astronaut)
    assert call.call_count == 1  # not retryable by the library's default policy


def test_gcv_unavailable_is_retried_by_the_library_defaults(allow, astronaut: np.ndarray) -> None:
    client = gcv_client()
    with mock_rpc(client) as call:
        call.side_effect = [api_exceptions.ServiceUnavailable("try again"), batch(gcv_face(FACE, 0.9))]
        faces = gcv.GoogleVision(client=client).detect(astronaut)
    assert call.call_count == 2
    assert faces[0].bbox == pytest.approx(FACE, abs=0.5)


def test_gcv_face_cut_by_the_right_edge(allow, astronaut: np.ndarray) -> None:
    # Vision leaves out the coordinates of a side beyond the image: they read as 0.
    face = gcv_face(FACE, 0.9)
    face.fd_bounding_poly = vision.BoundingPoly(
        vertices=[
            vision.Vertex(x=470, y=100),
            vision.Vertex(y=100),
            vision.Vertex(y=200),
            vision.Vertex(x=470, y=200),
        ]
    )
    client = gcv_client()
    with mock_rpc(client) as call:
        call.return_value = batch(face)
        faces = gcv.GoogleVision(client=client).detect(astronaut)
    assert faces[0].bbox == pytest.approx((470.0, 100.0, 42.0, 100.0))


def test_gcv_needs_explicit_opt_in(monkeypatch) -> None:
    monkeypatch.delenv(cloud.ALLOW_ENV, raising=False)
    with pytest.raises(UsageError, match="sending images to Google Cloud Vision must be enabled explicitly"):
        gcv.GoogleVision(client=gcv_client())
    with pytest.raises(UsageError, match="--allow-cloud"):
        registered()["gcv"].factory(threads=None)


def test_gcv_without_credentials_is_a_usage_error(allow, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud application-default credentials
    monkeypatch.setattr("google.auth.compute_engine._metadata.is_on_gce", lambda *a, **k: False)
    with pytest.raises(UsageError, match="no Google Cloud credentials found"):
        gcv.GoogleVision()


def test_gcv_missing_sdk_names_the_extra(allow, monkeypatch) -> None:
    import google.cloud

    monkeypatch.setitem(sys.modules, "google.cloud.vision", None)
    monkeypatch.delattr(google.cloud, "vision", raising=False)
    with pytest.raises(MissingExtraError, match=r"pip install 'faceveil\[gcv\]'"):
        gcv.GoogleVision()
