"""s3:// edge data against a real S3 server (SeaweedFS on 127.0.0.1), with the `minio` client.

Covers: URI and endpoint parsing, mirroring a prefix (incremental), edge inspection from a
bucket, and the errors for missing or wrong credentials, a missing bucket, an unreachable
endpoint and an empty prefix, none of which may show a credential.
"""


import pytest

from entgan.job import storage
from entgan.job.data import inspect_edge, list_images
from entgan.job.storage import StorageError
from tests.servers import free_port, seaweedfs

BUCKET = "edges"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        server.client().make_bucket(BUCKET)
        yield server


@pytest.fixture
def s3_env(s3, monkeypatch, tmp_path):
    """The process environment of a pod that has the entgan-s3 Secret and ConfigMap."""
    for key in storage.ENDPOINT_ENVS + (storage.KEY_ENV, storage.SECRET_ENV, storage.CACHE_ENV):
        monkeypatch.delenv(key, raising=False)
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
    return s3


@pytest.fixture(scope="module")
def edge_in_bucket(s3, demo_edges):
    """The demo's edge-1 folder uploaded to s3://edges/site-a/edge-1/."""
    local = demo_edges / "edges" / "edge-1"
    env = s3.env
    count = storage.upload_folder(local, f"s3://{BUCKET}/site-a/edge-1", env=env)
    return local, f"s3://{BUCKET}/site-a/edge-1", count


def _assert_no_secret(message: str, s3) -> None:
    assert s3.secret_key not in message and s3.access_key not in message


# ---------------------------------------------------------------- parsing (no server)


def test_parse_s3_uri_normalizes_the_prefix():
    # Prepare / Execute
    deep = storage.parse_s3_uri("s3://my-bucket/a/b/")
    top = storage.parse_s3_uri("s3://my-bucket")
    # Assert
    assert (deep.bucket, deep.prefix, deep.uri) == ("my-bucket", "a/b/", "s3://my-bucket/a/b/")
    assert top.prefix == ""


@pytest.mark.parametrize("uri", ["s3://B_ad/x", "s3://ab/x", "/data/edge-1"])
def test_parse_s3_uri_rejects_bad_uris_with_the_fix(uri):
    with pytest.raises(StorageError, match="s3://"):
        storage.parse_s3_uri(uri)


def test_endpoint_comes_from_the_first_variable_set():
    # Prepare
    env = {"MLFLOW_S3_ENDPOINT_URL": "http://mlflow-s3:9000", "ENTGAN_S3_ENDPOINT": "https://minio.entgan:9000"}
    # Execute
    first = storage.endpoint_from_env(env)
    fallback = storage.endpoint_from_env({"MLFLOW_S3_ENDPOINT_URL": "minio:9000"})
    default = storage.endpoint_from_env({})
    # Assert
    assert (first.host, first.secure) == ("minio.entgan:9000", True)
    assert (fallback.url, default.url) == ("http://minio:9000", "https://s3.amazonaws.com")


def test_endpoint_with_a_path_is_rejected():
    with pytest.raises(StorageError, match="not a URL like"):
        storage.endpoint_from_env({"ENTGAN_S3_ENDPOINT": "http://minio:9000/bucket"})


def test_missing_credentials_name_the_variables_and_the_secret():
    # Execute
    with pytest.raises(StorageError) as err:
        storage.client_from_env({"ENTGAN_S3_ENDPOINT": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "k"})
    # Assert
    assert "AWS_SECRET_ACCESS_KEY not set" in str(err.value) and storage.SECRET_NAME in str(err.value)


def test_keys_that_would_leave_the_cache_are_refused():
    assert storage._safe_relative("p/box/1.png", "p/").as_posix() == "box/1.png"
    assert storage._safe_relative("p/box/", "p/") is None
    with pytest.raises(StorageError, match="would leave the cache folder"):
        storage._safe_relative("p/../../etc/passwd", "p/")


def test_local_paths_pass_through_untouched(tmp_path):
    assert storage.local_folder(str(tmp_path)) == tmp_path


# ---------------------------------------------------------------- against SeaweedFS


def test_list_images_reads_an_s3_prefix_like_a_folder(s3_env, edge_in_bucket):
    # Prepare
    local, uri, uploaded = edge_in_bucket
    # Execute
    remote = list_images(uri)
    # Assert: same types, same file names, same bytes
    expected = list_images(local)
    assert uploaded == sum(len(f) for f in expected.values()) > 0
    assert {t: [f.name for f in fs] for t, fs in remote.items()} == {
        t: [f.name for f in fs] for t, fs in expected.items()
    }
    some = expected["box"][0]
    assert (storage.cache_folder(uri) / "box" / some.name).read_bytes() == some.read_bytes()


def test_inspect_edge_counts_the_same_from_a_bucket(s3_env, edge_in_bucket):
    local, uri, _ = edge_in_bucket
    assert inspect_edge("edge-1", uri, 0.2, 16) == inspect_edge("edge-1", local, 0.2, 16)


def test_mirror_downloads_only_what_changed_and_drops_what_is_gone(s3_env, tmp_path, demo_edges):
    # Prepare
    uri = f"s3://{BUCKET}/mirror-test"
    storage.upload_folder(demo_edges / "edges" / "edge-2", uri)
    first = storage.mirror(uri, tmp_path / "m")
    client = s3_env.client()
    names = sorted(o.object_name for o in client.list_objects(BUCKET, prefix="mirror-test/", recursive=True))
    other_image = sorted((demo_edges / "edges" / "edge-1" / "box").iterdir())[0]
    client.remove_object(BUCKET, names[0])
    client.fput_object(BUCKET, names[1], str(other_image))  # new content under an old name
    # Execute
    second = storage.mirror(uri, tmp_path / "m")
    # Assert
    assert first.downloaded == len(names) and first.unchanged == 0
    assert (second.downloaded, second.removed, second.unchanged) == (1, 1, len(names) - 2)
    assert not (tmp_path / "m" / names[0].removeprefix("mirror-test/")).exists()


def test_wrong_credentials_are_a_clear_error_without_the_secret(s3_env, edge_in_bucket, monkeypatch):
    # Prepare
    _, uri, _ = edge_in_bucket
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    # Execute
    with pytest.raises(StorageError) as err:
        storage.local_folder(uri)
    # Assert
    message = str(err.value)
    assert "rejected the credentials" in message and s3_env.endpoint in message
    assert "not-the-secret-at-all" not in message
    _assert_no_secret(message, s3_env)


def test_unknown_access_key_is_a_clear_error(s3_env, edge_in_bucket, monkeypatch):
    _, uri, _ = edge_in_bucket
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(StorageError, match="rejected the credentials") as err:
        storage.local_folder(uri)
    assert "nobody" not in str(err.value)


def test_missing_bucket_is_named_with_the_fix(s3_env):
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist.*create it") as err:
        storage.local_folder("s3://no-such-bucket/edge-1")
    _assert_no_secret(str(err.value), s3_env)


def test_empty_prefix_says_to_upload_the_data(s3_env):
    with pytest.raises(StorageError, match="holds no objects"):
        storage.local_folder(f"s3://{BUCKET}/nothing-here")


def test_unreachable_endpoint_names_the_endpoint_and_the_variable(s3_env, monkeypatch):
    # Prepare: a loopback port where nothing listens
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("ENTGAN_S3_ENDPOINT", dead)
    # Execute
    with pytest.raises(StorageError) as err:
        storage.local_folder(f"s3://{BUCKET}/site-a/edge-1")
    # Assert
    assert f"S3 at {dead} is unreachable" in str(err.value) and "ENTGAN_S3_ENDPOINT" in str(err.value)
    _assert_no_secret(str(err.value), s3_env)


def test_cache_folder_separates_endpoints_and_buckets(tmp_path):
    a = storage.cache_folder("s3://bk1/p", tmp_path, env={"ENTGAN_S3_ENDPOINT": "http://h1:9000"})
    b = storage.cache_folder("s3://bk1/p", tmp_path, env={"ENTGAN_S3_ENDPOINT": "http://h2:9000"})
    assert a != b and a.is_relative_to(tmp_path) and a.parts[-2:] == ("bk1", "p")
