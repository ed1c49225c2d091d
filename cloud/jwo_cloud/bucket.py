"""Where the cloud keeps its objects: an S3 bucket (AWS, MinIO or any S3-compatible
store, through boto3) or, as the embedded default for one machine, a local directory.

Both give the same small interface, including a *conditional create*
(``put(..., if_none_match=True)``): it writes only when no object has the key and
says whether it did. On S3 that is ``PutObject`` with ``If-None-Match: *`` (HTTP 412 when
the key exists); in a directory it is ``link(2)`` of a fully written, fsync'd temporary
file, which fails atomically with EEXIST. The review takes its lock with it, and the
ingest its idempotent receipt writes.

And a *conditional replace* (``put(..., if_match=etag)`` after ``get_object``): it
writes only when the object is still the one read, so read-change-write cycles on a
shared object (the review queue's index) never lose a concurrent change. On S3 that is
``PutObject`` with ``If-Match``; in a directory the compare and the rename happen under
an exclusive ``flock`` of the key's lock file in ``<root>/.locks``.

Keys are ``/``-separated segments of ``[A-Za-z0-9._:-]`` (no empty, ``.`` or ``..``
segment), so a key can never escape a directory bucket.
"""
import fcntl
import hashlib
import json
import mimetypes
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

_SEGMENT = re.compile(r'^[A-Za-z0-9._:-]{1,200}$')


class BucketError(Exception):
    """A write or read failed in a way that may succeed later (retry it)."""


def check_key(key: str) -> str:
    parts = key.split('/')
    if not parts or any(not _SEGMENT.match(p) or p in ('.', '..') for p in parts):
        raise ValueError(f'invalid object key {key!r}')
    return key


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes and the entity tag that names this version of it."""
    data: bytes
    etag: str


class Bucket:
    """The interface of both bucket kinds."""

    url = ''

    def put(self, key: str, data: bytes, content_type: str = 'application/json',
            if_none_match: bool = False, metadata: Optional[dict] = None,
            if_match: Optional[str] = None) -> bool:
        """Writes the object; with if_none_match only when the key is free, with
        if_match only when the object there still has that etag. Returns True when it
        wrote, False when the condition failed."""
        raise NotImplementedError

    def get_object(self, key: str) -> Optional[StoredObject]:
        """The object with its etag (for a later put(..., if_match=etag)), None when missing."""
        raise NotImplementedError

    def put_file(self, key: str, path: str, content_type: str,
                 metadata: Optional[dict] = None) -> None:
        raise NotImplementedError

    def get(self, key: str, byte_range: Optional[tuple] = None) -> Optional[bytes]:
        """The object's bytes (or bytes first..last inclusive), None when it is missing."""
        raise NotImplementedError

    def get_json(self, key: str) -> Optional[dict]:
        """The object read as JSON; None when it is missing or not JSON."""
        data = self.get(key)
        try:
            return json.loads(data) if data is not None else None
        except ValueError:
            return None

    def head(self, key: str) -> Optional[dict]:
        """{'size', 'content_type', 'metadata'} or None when missing."""
        raise NotImplementedError

    def list(self, prefix: str) -> Iterator[str]:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def location(self, key_prefix: str = '') -> str:
        """Where a key (prefix) is, for people: s3://name/key or a path."""
        raise NotImplementedError


class DirBucket(Bucket):
    """A bucket in a local directory: every object is a file at <root>/<key>.

    Writes go to a temporary file in <root>/.tmp, are fsync'd and then renamed (or
    linked, for a conditional create) into place, and the directory is fsync'd: an
    object is either absent or complete, also after a power loss.
    """

    def __init__(self, root):
        self.root = Path(root).resolve()
        self._tmp = self.root / '.tmp'
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._locks = self.root / '.locks'
        self._locks.mkdir(exist_ok=True)
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _write_tmp(self, writer) -> str:
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, 'wb') as handle:
                writer(handle)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _place(self, key: str, tmp: str, if_none_match: bool, if_match: Optional[str] = None) -> bool:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if if_none_match:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
            elif if_match is not None:
                with self._locked(key):
                    current = self.get_object(key)
                    if current is None or current.etag != if_match:
                        return False
                    os.replace(tmp, path)
            else:
                os.replace(tmp, path)
            self._fsync_dir(path.parent)
            return True
        except OSError as error:
            raise BucketError(f'{path}: {error}') from error
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _locked(self, key: str):
        """An exclusive flock of the key's lock file, for as long as the with-block runs
        (every process writing this directory takes the same one)."""
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        handle = open(self._locks / name, 'a')
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle   # closing it (end of the with-block) releases the lock

    def put(self, key, data, content_type='application/json', if_none_match=False,
            metadata=None, if_match=None) -> bool:
        check_key(key)
        try:
            tmp = self._write_tmp(lambda handle: handle.write(data))
        except OSError as error:
            raise BucketError(f'{self.root}: {error}') from error
        return self._place(key, tmp, if_none_match, if_match)

    def get_object(self, key):
        data = self.get(key)
        if data is None:
            return None
        return StoredObject(data, hashlib.md5(data, usedforsecurity=False).hexdigest())

    def put_file(self, key, path, content_type, metadata=None) -> None:
        check_key(key)

        def copy(handle):
            with open(path, 'rb') as source:
                shutil.copyfileobj(source, handle, 1 << 20)
        try:
            tmp = self._write_tmp(copy)
        except OSError as error:
            raise BucketError(f'{self.root}: {error}') from error
        self._place(key, tmp, False)

    def get(self, key, byte_range=None):
        path = self._path(key)
        try:
            with open(path, 'rb') as handle:
                if byte_range is None:
                    return handle.read()
                first, last = byte_range
                handle.seek(first)
                return handle.read(last - first + 1)
        except FileNotFoundError:
            return None

    def head(self, key):
        path = self._path(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        content_type = mimetypes.guess_type(path.name)[0] or 'application/octet-stream'
        return {'size': size, 'content_type': content_type, 'metadata': {}}

    def list(self, prefix):
        directory = prefix.rpartition('/')[0]
        base = self.root / directory if directory else self.root
        if not base.is_dir():
            return iter(())
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames
                           if not (Path(dirpath) == self.root and d in ('.tmp', '.locks'))]
            for name in filenames:
                keys.append(str(Path(dirpath, name).relative_to(self.root)))
        return iter(sorted(k for k in keys if k.startswith(prefix)))

    def delete(self, key):
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def location(self, key_prefix=''):
        return str(self.root / key_prefix) + ('/' if key_prefix.endswith('/') else '')


class S3Bucket(Bucket):
    """A bucket behind the S3 API (boto3): s3://name, optionally with an endpoint URL
    for an S3-compatible server (MinIO, moto) and a key prefix (s3://name/prefix).

    Credentials come from boto3's usual chain (environment, profile, instance role) on
    the cloud side; stores never hold them.
    """

    def __init__(self, name: str, prefix: str = '', endpoint_url: Optional[str] = None,
                 client=None, region_name: Optional[str] = None):
        import boto3
        from botocore.config import Config
        self.name = name
        self.prefix = prefix.strip('/') + '/' if prefix.strip('/') else ''
        self.endpoint_url = endpoint_url
        self.client = client or boto3.client(
            's3', endpoint_url=endpoint_url,
            region_name=region_name or os.environ.get('AWS_DEFAULT_REGION', 'us-east-1'),
            config=Config(retries={'max_attempts': 2, 'mode': 'standard'},
                          connect_timeout=5, read_timeout=30,
                          max_pool_connections=32))
        self.url = f's3://{name}/{self.prefix}'.rstrip('/')

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _error(self, error) -> BucketError:
        return BucketError(f'{self.url}: {error}')

    def put(self, key, data, content_type='application/json', if_none_match=False,
            metadata=None, if_match=None) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError
        arguments = dict(Bucket=self.name, Key=self._key(key), Body=data,
                         ContentType=content_type, Metadata=metadata or {})
        if if_none_match:
            arguments['IfNoneMatch'] = '*'
        if if_match is not None:
            arguments['IfMatch'] = if_match
        try:
            self.client.put_object(**arguments)
            return True
        except ClientError as error:
            code = error.response.get('Error', {}).get('Code', '')
            status = error.response.get('ResponseMetadata', {}).get('HTTPStatusCode')
            conditional = if_none_match or if_match is not None
            if conditional and (code == 'PreconditionFailed' or status == 412):
                return False
            if conditional and (code == 'ConditionalRequestConflict' or status == 409):
                # A concurrent conditional write to this key is in progress: it will
                # have changed the key (S3 answers 409 to the loser of such a race).
                return False
            if if_match is not None and (code == 'NoSuchKey' or status == 404):
                return False   # gone since it was read: not the version the caller has
            raise self._error(error) from error
        except BotoCoreError as error:
            raise self._error(error) from error

    def get_object(self, key):
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            answer = self.client.get_object(Bucket=self.name, Key=self._key(key))
            return StoredObject(answer['Body'].read(), answer['ETag'])
        except ClientError as error:
            if error.response.get('Error', {}).get('Code') in ('NoSuchKey', '404'):
                return None
            raise self._error(error) from error
        except BotoCoreError as error:
            raise self._error(error) from error

    def put_file(self, key, path, content_type, metadata=None) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            with open(path, 'rb') as body:
                self.client.put_object(Bucket=self.name, Key=self._key(key), Body=body,
                                       ContentType=content_type, Metadata=metadata or {})
        except (ClientError, BotoCoreError, OSError) as error:
            raise self._error(error) from error

    def get(self, key, byte_range=None):
        from botocore.exceptions import BotoCoreError, ClientError
        arguments = dict(Bucket=self.name, Key=self._key(key))
        if byte_range is not None:
            arguments['Range'] = f'bytes={byte_range[0]}-{byte_range[1]}'
        try:
            return self.client.get_object(**arguments)['Body'].read()
        except ClientError as error:
            if error.response.get('Error', {}).get('Code') in ('NoSuchKey', '404'):
                return None
            raise self._error(error) from error
        except BotoCoreError as error:
            raise self._error(error) from error

    def head(self, key):
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            answer = self.client.head_object(Bucket=self.name, Key=self._key(key))
        except ClientError as error:
            if error.response.get('Error', {}).get('Code') in ('NoSuchKey', '404', 'NotFound'):
                return None
            raise self._error(error) from error
        except BotoCoreError as error:
            raise self._error(error) from error
        return {'size': answer['ContentLength'],
                'content_type': answer.get('ContentType', 'application/octet-stream'),
                'metadata': answer.get('Metadata', {})}

    def list(self, prefix):
        from botocore.exceptions import BotoCoreError, ClientError
        paginator = self.client.get_paginator('list_objects_v2')
        try:
            for page in paginator.paginate(Bucket=self.name, Prefix=self.prefix + prefix):
                for item in page.get('Contents', []):
                    yield item['Key'][len(self.prefix):]
        except (ClientError, BotoCoreError) as error:
            raise self._error(error) from error

    def delete(self, key):
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            self.client.delete_object(Bucket=self.name, Key=self._key(key))
        except (ClientError, BotoCoreError) as error:
            raise self._error(error) from error

    def location(self, key_prefix=''):
        where = f's3://{self.name}/{self.prefix}{key_prefix}'
        return where + (f' (endpoint {self.endpoint_url})' if self.endpoint_url else '')


def open_bucket(url: str, endpoint_url: Optional[str] = None) -> Bucket:
    """'s3://name[/prefix]' -> S3Bucket, anything else is a directory -> DirBucket."""
    if url.startswith('s3://'):
        name, _, prefix = url[len('s3://'):].partition('/')
        if not name:
            raise ValueError(f'{url}: no bucket name')
        return S3Bucket(name, prefix, endpoint_url=endpoint_url)
    if '://' in url:
        raise ValueError(f'{url}: a bucket is s3://name or a directory')
    return DirBucket(url)
