"""The uplink protocol shared by the store (uplink) and the cloud (ingest): the
protobuf messages of cloud/proto/jwo_uplink_v1.proto, the idempotency keys of items
and how a clip reference becomes a clip id. Pure: no zmq, no rclpy."""
import hashlib
import re

from google.protobuf.descriptor import FieldDescriptor

from jwo_cloud import jwo_uplink_v1_pb2 as pb

SCHEMA_VERSION = pb.SCHEMA_VERSION

# Ids that become parts of object keys: no '/', nothing a path could abuse.
_SAFE_ID = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$')

RECEIPT = 'receipt'
REVIEW = 'review'
CLIP = 'clip'
CATALOGUE = 'catalogue'
ACCESS = 'access'
EVIDENCE = 'evidence'
# Items of the store itself rather than of a visit share this visit key (in order).
STORE_VISIT_KEY = 'store'


def is_safe_id(value: str) -> bool:
    return bool(_SAFE_ID.match(value)) and '..' not in value


def item_id(kind: str, ident: str) -> str:
    """The idempotency key of an item: 'receipt:<receipt_id>', 'review:<receipt_id>',
    'clip:<clip_id>', 'catalogue:<digest>-<created_ns>', 'access:<receipt_id>',
    'evidence:<receipt_id>'."""
    return f'{kind}:{ident}'


def catalogue_item_id(catalogue, created_ns: int) -> str:
    """A StoreCatalogue sent at created_ns: its content's digest and that time."""
    digest = hashlib.sha256(catalogue.SerializeToString(deterministic=True)).hexdigest()[:32]
    return item_id(CATALOGUE, f'{digest}-{created_ns}')


def visit_key(visit_code: str, receipt_id: str) -> str:
    """Items of one visit share this key and are delivered in order."""
    return f'visit:{visit_code or receipt_id}'


def clip_id(clip_ref: str) -> str:
    """The cloud name of a clip reference: a hash of the reference (unique, stable
    across retries) and the file name (readable, keeps the extension for its type)."""
    digest = hashlib.sha256(clip_ref.encode()).hexdigest()[:16]
    name = clip_ref.rstrip('/').rsplit('/', 1)[-1]
    name = re.sub(r'[^A-Za-z0-9._-]', '_', name).lstrip('.-_')[-80:] or 'clip'
    return f'{digest}-{name}'


def clip_path(clip_ref: str, clip_root: str = '') -> str:
    """The file a clip reference names on the store: 'file://' URIs and absolute
    paths as they are, relative paths under clip_root."""
    path = clip_ref[len('file://'):] if clip_ref.startswith('file://') else clip_ref
    if clip_root and not path.startswith('/'):
        path = f'{clip_root.rstrip("/")}/{path}'
    return path


def to_dict(message) -> dict:
    """A protobuf message as plain JSON-able values: every field present (defaults
    included), int64 as int (not str as json_format does), enums by name, bytes left out."""
    out = {}
    for field in message.DESCRIPTOR.fields:
        if field.type == FieldDescriptor.TYPE_BYTES:
            continue
        if field.containing_oneof is not None and not message.HasField(field.name):
            continue
        value = getattr(message, field.name)
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            out[field.name] = [to_dict(v) for v in value] if repeated else to_dict(value)
        elif field.type == FieldDescriptor.TYPE_ENUM:
            names = field.enum_type.values_by_number
            convert = (lambda v: names[v].name if v in names else int(v))
            out[field.name] = [convert(v) for v in value] if repeated else convert(value)
        elif field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            out[field.name] = ([round(float(v), 6) for v in value] if repeated
                               else round(float(value), 6))
        else:
            out[field.name] = list(value) if repeated else value
    return out


def make_envelope(store_id: str, item: str, visit: str, created_ns: int, **body):
    envelope = pb.Envelope(schema_version=SCHEMA_VERSION, store_id=store_id, item_id=item,
                           visit_key=visit, created_ns=created_ns)
    for name, message in body.items():
        getattr(envelope, name).CopyFrom(message)
    return envelope
