"""Object storage: `s3://bucket/prefix` URIs (MinIO, SeaweedFS, AWS S3) wherever a local folder works.

Edge data may live in a bucket instead of a folder: `local_folder(uri)` mirrors an `s3://` prefix
into a local cache (only new or changed objects are downloaded, objects gone from the bucket are
removed from the cache) and returns the cache folder; a local path comes back unchanged.

Credentials come only from the environment, never from job files or arguments:
`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (in the cluster: the `entgan-s3` Secret), the
endpoint from `ENTGAN_S3_ENDPOINT` (else `MLFLOW_S3_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`,
`AWS_ENDPOINT_URL`; default AWS S3). Error messages name the endpoint, the bucket and the fix,
never a credential.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

SCHEME = "s3://"
ENDPOINT_ENVS = ("ENTGAN_S3_ENDPOINT", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
KEY_ENV, SECRET_ENV = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
CACHE_ENV = "ENTGAN_CACHE_DIR"
SECRET_NAME = "entgan-s3"  # the Kubernetes Secret that holds KEY_ENV and SECRET_ENV
CONFIG_NAME = "entgan-config"  # the Kubernetes ConfigMap that holds ENTGAN_S3_ENDPOINT
MANIFEST = ".entgan-mirror.json"  # etag of every mirrored object, beside the mirrored files
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken"}


class StorageError(RuntimeError):
    """Object storage cannot be used; the message names the endpoint or bucket and the fix."""


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading slash; empty, or ending in '/')."""

    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class S3Endpoint:
    """Where the S3 API answers: `host[:port]` and whether it speaks TLS."""

    host: str
    secure: bool

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}"


def is_remote(uri: str | Path) -> bool:
    """True for an `s3://` URI (pass URIs as `str`: `Path` collapses the double slash)."""
    return str(uri).startswith(SCHEME)


def parse_s3_uri(uri: str) -> S3Location:
    """`s3://bucket/some/prefix` -> S3Location('bucket', 'some/prefix/')."""
    if not is_remote(uri):
        raise StorageError(f"{uri!r} is not an s3:// URI; write s3://<bucket>/<prefix>")
    bucket, _, prefix = uri[len(SCHEME) :].partition("/")
    if not _BUCKET.match(bucket):
        raise StorageError(
            f"{uri!r}: {bucket!r} is not a valid bucket name; use 3-63 lowercase letters, digits, '.' and '-'"
        )
    prefix = prefix.strip("/")
    return S3Location(bucket, f"{prefix}/" if prefix else "")


def endpoint_from_env(env: Mapping[str, str] | None = None) -> S3Endpoint:
    """The S3 endpoint named by the first set variable of ENDPOINT_ENVS (default: AWS S3)."""
    env = os.environ if env is None else env
    raw = next((env[name] for name in ENDPOINT_ENVS if env.get(name)), "https://s3.amazonaws.com")
    parts = urlsplit(raw if "://" in raw else f"http://{raw}")
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise StorageError(
            f"S3 endpoint {raw!r} is not a URL like http://minio.entgan:9000; fix {'/'.join(ENDPOINT_ENVS[:2])}"
        )
    return S3Endpoint(parts.netloc, parts.scheme == "https")


def client_from_env(env: Mapping[str, str] | None = None):
    """A `minio.Minio` client for the endpoint and credentials in the environment."""
    import urllib3
    from minio import Minio

    env = os.environ if env is None else env
    endpoint = endpoint_from_env(env)
    missing = [name for name in (KEY_ENV, SECRET_ENV) if not env.get(name)]
    if missing:
        raise StorageError(
            f"S3 at {endpoint.url}: {' and '.join(missing)} not set; export them "
            f"(in the cluster they come from the Secret {SECRET_NAME!r})"
        )
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=120),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
    )
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    return Minio(
        endpoint.host,
        access_key=env[KEY_ENV],
        secret_key=env[SECRET_ENV],
        secure=endpoint.secure,
        region=region,
        http_client=http,
    )


@contextmanager
def _explained(endpoint: S3Endpoint, location: S3Location, action: str) -> Iterator[None]:
    """Turn the S3 client's errors into one StorageError line that says what to do."""
    import urllib3
    from minio.error import MinioException, S3Error

    where = f"S3 at {endpoint.url}"
    try:
        yield
    except S3Error as err:
        if err.code == "NoSuchBucket":
            raise StorageError(
                f"{where}: bucket {location.bucket!r} does not exist (while trying to {action}); "
                "create it or fix the s3:// URI"
            ) from None
        if err.code in _CREDENTIAL_CODES:
            raise StorageError(
                f"{where} rejected the credentials for bucket {location.bucket!r} ({err.code}, while trying to "
                f"{action}); check {KEY_ENV} and {SECRET_ENV} (Secret {SECRET_NAME!r} in the cluster)"
            ) from None
        raise StorageError(f"{where}: {action} failed for {location.uri} ({err.code})") from None
    except (urllib3.exceptions.HTTPError, MinioException) as err:
        reason = type(getattr(err, "reason", None) or err).__name__
        raise StorageError(
            f"{where} is unreachable while trying to {action} ({reason}); start the S3 server or "
            f"fix {ENDPOINT_ENVS[0]}"
        ) from None


def _safe_relative(key: str, prefix: str) -> PurePosixPath | None:
    """The object's path below the prefix, or None for folder markers; rejects keys that would
    escape the cache folder."""
    rel = PurePosixPath(key[len(prefix) :])
    if key.endswith("/") or not rel.parts:
        return None
    if rel.is_absolute() or ".." in rel.parts:
        raise StorageError(f"object key {key!r} would leave the cache folder; rename it in the bucket")
    return rel


@dataclass(frozen=True)
class MirrorResult:
    folder: Path
    downloaded: int
    unchanged: int
    removed: int


def mirror(uri: str, dest: str | Path, env: Mapping[str, str] | None = None) -> MirrorResult:
    """Make `dest` hold exactly the objects below the `s3://` prefix `uri` (incremental)."""
    location = parse_s3_uri(uri)
    endpoint, client = endpoint_from_env(env), client_from_env(env)
    dest = Path(dest)
    manifest_path = dest / MANIFEST
    known: dict[str, str] = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    with _explained(endpoint, location, f"list {location.uri}"):
        objects = list(client.list_objects(location.bucket, prefix=location.prefix, recursive=True))
    wanted = {}
    for obj in objects:
        rel = _safe_relative(obj.object_name, location.prefix)
        if rel is not None:
            wanted[str(rel)] = obj
    if not wanted:
        raise StorageError(f"{location.uri} holds no objects; upload the data there or fix the s3:// URI")
    downloaded = unchanged = 0
    for rel, obj in sorted(wanted.items()):
        local = dest / rel
        if known.get(rel) == obj.etag and local.is_file() and local.stat().st_size == obj.size:
            unchanged += 1
            continue
        local.parent.mkdir(parents=True, exist_ok=True)
        with _explained(endpoint, location, f"download {location.uri}{rel}"):
            client.fget_object(location.bucket, obj.object_name, str(local))
        known[rel] = obj.etag
        downloaded += 1
    removed = 0
    for rel in sorted(set(known) - set(wanted)):
        (dest / rel).unlink(missing_ok=True)
        del known[rel]
        removed += 1
    dest.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(known, sort_keys=True))
    return MirrorResult(dest, downloaded, unchanged, removed)


def cache_folder(uri: str, cache_dir: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Where `local_folder` mirrors `uri`: <cache>/s3/<endpoint host>/<bucket>/<prefix>."""
    env = os.environ if env is None else env
    location = parse_s3_uri(uri)
    root = Path(cache_dir or env.get(CACHE_ENV) or Path.home() / ".cache" / "entgan")
    host = re.sub(r"[^A-Za-z0-9.-]", "_", endpoint_from_env(env).host)
    return root / "s3" / host / location.bucket / location.prefix


def local_folder(uri: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local folder with the contents of `uri`: the path itself, or a fresh mirror of an s3:// prefix."""
    if not is_remote(uri):
        return Path(uri)
    return mirror(str(uri), cache_folder(str(uri), cache_dir)).folder


def upload_folder(folder: str | Path, uri: str, env: Mapping[str, str] | None = None) -> int:
    """Upload every file below `folder` to the `s3://` prefix `uri`; returns the number of files."""
    location = parse_s3_uri(uri)
    endpoint, client = endpoint_from_env(env), client_from_env(env)
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    for path in files:
        key = location.prefix + path.relative_to(folder).as_posix()
        with _explained(endpoint, location, f"upload {location.uri}{path.relative_to(folder).as_posix()}"):
            client.fput_object(location.bucket, key, str(path))
    return len(files)
