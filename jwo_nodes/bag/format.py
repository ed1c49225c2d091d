"""rosbag2 bags in the MCAP storage format, from and to already-serialized CDR bytes.

Pure: no rclpy. The ROS nodes (recorder, replayer) hand this module the bytes that
rclpy's raw subscriptions give and publish the bytes it reads back.

What a bag looks like, as rosbag2 (storage plugin ``mcap``, metadata version 9) writes it
so that ``ros2 bag info/play`` and independent readers (``mcap`` + ``mcap-ros2-support``,
``rosbags``) open it::

    <bag>/metadata.yaml          rosbag2_bagfile_information (version 9)
    <bag>/<bag>_0.mcap           MCAP, profile "ros2"

* one Schema per message type: name ``pkg/msg/Type``, encoding ``ros2msg``, data the
  .msg text followed by every nested type's text, each after a line of 80 ``=`` and a
  ``MSG: pkg/Type`` line (rosbag2's LocalMessageDefinitionSource, read from the ament
  index ``<prefix>/share/<pkg>/msg/<Type>.msg``);
* one Channel per topic: message encoding ``cdr``, metadata ``offered_qos_profiles``
  (YAML list of the publishers' QoS, policies as lower-case names) and
  ``topic_type_hash`` (RIHS01_...);
* Messages: log_time = receive time, publish_time = the header stamp where there is one;
* a Metadata record ``rosbag2`` with ``serialized_metadata`` (the same document as
  metadata.yaml without its top-level key) written last, before the summary.

Writes go to ``<name>.mcap.part`` and are renamed to ``<name>.mcap`` only once the file
is complete, so a crash never leaves a complete-looking half file behind.
"""
from __future__ import annotations

import heapq
import io
import json
import os
import re
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

import yaml
from mcap.data_stream import ReadDataStream
from mcap.opcode import Opcode
from mcap.records import (Channel, Chunk, ChunkIndex, DataEnd, Footer, Header, Message,
                          Metadata, MetadataIndex, Schema, Statistics)
from mcap.writer import CompressionType, Writer

MCAP_MAGIC = b'\x89MCAP0\r\n'
PROFILE = 'ros2'
SCHEMA_ENCODING = 'ros2msg'
MESSAGE_ENCODING = 'cdr'
STORAGE_IDENTIFIER = 'mcap'
METADATA_VERSION = 9
METADATA_FILE = 'metadata.yaml'
PART_SUFFIX = '.part'
LIBRARY = 'jwo bag 1'
DEFINITION_SEPARATOR = '=' * 80
MAX_DEFINITION_DEPTH = 50  # as rosbag2's local message definition source

_FOOTER_RECORD_SIZE = 1 + 8 + 8 + 8 + 4
_RECORD_PREFIX = 1 + 8
_COMPRESSION = {'none': CompressionType.NONE, 'zstd': CompressionType.ZSTD,
                'lz4': CompressionType.LZ4}


class BagError(Exception):
    """A bag cannot be read or written. Names the file and, where known, the record."""

    def __init__(self, path, problem: str, where: Optional[str] = None):
        self.path = str(path)
        self.problem = problem
        self.where = where
        super().__init__(f'{self.path}: {where}: {problem}' if where else f'{self.path}: {problem}')


class TruncatedBagError(BagError):
    """The file ends before it should: the recording was cut off, or the copy is partial."""


class CorruptBagError(BagError):
    """A record of the file is damaged (bad length, bad CRC, undecodable)."""


class UnknownMessageTypeError(BagError):
    """A topic's message type has no usable definition (here, or not installed)."""


class DefinitionNotFoundError(LookupError):
    """No .msg file for a message type in any ament prefix."""


# ---------------------------------------------------------------- message definitions

_FIELD_TYPE = re.compile(r'(?:^|\n)\s*([a-zA-Z0-9_/]+)(?:\[[^\]]*\])?\s+')
_PRIMITIVE_TYPES = frozenset({
    'bool', 'byte', 'char', 'float32', 'float64', 'int8', 'uint8', 'int16', 'uint16',
    'int32', 'uint32', 'int64', 'uint64', 'string', 'wstring'})
_NAME = r'[a-zA-Z][a-zA-Z0-9_]*'
_TYPE_NAME = re.compile(rf'^({_NAME})/(?:({_NAME})/)?({_NAME})$')


def split_type_name(type_name: str) -> tuple:
    """'pkg/msg/Type' or 'pkg/Type' -> ('pkg', 'msg', 'Type'); ValueError otherwise."""
    match = _TYPE_NAME.match(type_name)
    if not match:
        raise ValueError(f'not a ROS 2 message type name: {type_name!r}')
    return match.group(1), match.group(2) or 'msg', match.group(3)


def normalize_type_name(type_name: str) -> str:
    """'pkg/Type' -> 'pkg/msg/Type' (the form topics and schemas carry)."""
    package, namespace, name = split_type_name(type_name)
    return f'{package}/{namespace}/{name}'


def ament_prefixes() -> list:
    """The install prefixes whose ament index is searched, AMENT_PREFIX_PATH first.

    The ROS 2 wheels install into the interpreter's prefix without setting
    AMENT_PREFIX_PATH, so that prefix is searched too when it holds an ament index.
    """
    prefixes = [Path(p) for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    own = Path(sys.prefix)
    if own not in prefixes and (own / 'share' / 'ament_index').is_dir():
        prefixes.append(own)
    return prefixes


def _dependencies(text: str, package: str) -> set:
    dependencies = set()
    for match in _FIELD_TYPE.finditer(text):
        type_name = match.group(1)
        if type_name in _PRIMITIVE_TYPES:
            continue
        dependencies.add(type_name if '/' in type_name else f'{package}/{type_name}')
    return dependencies


class DefinitionSource:
    """Message definitions and type hashes read from the installed interface files."""

    def __init__(self, prefixes: Optional[Iterable] = None):
        self.prefixes = [Path(p) for p in prefixes] if prefixes is not None else ament_prefixes()
        self._texts: dict = {}

    def _share(self, package: str) -> Optional[Path]:
        for prefix in self.prefixes:
            index = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
            if (index / package).is_file():
                return prefix / 'share' / package
        for prefix in self.prefixes:  # a prefix without the index marker (hand-made installs)
            if (prefix / 'share' / package).is_dir():
                return prefix / 'share' / package
        return None

    def _interface_file(self, type_name: str, extension: str) -> Path:
        package, namespace, name = split_type_name(type_name)
        share = self._share(package)
        path = share / namespace / f'{name}{extension}' if share else None
        if path is None or not path.is_file():
            searched = ', '.join(str(p) for p in self.prefixes) or '(no ament prefix)'
            raise DefinitionNotFoundError(
                f'no {namespace}/{name}{extension} of package {package} in the ament index '
                f'(searched {searched})')
        return path

    def msg_text(self, type_name: str) -> str:
        """The text of one .msg file ('pkg/Type' or 'pkg/msg/Type')."""
        key = normalize_type_name(type_name)
        if key not in self._texts:
            self._texts[key] = self._interface_file(key, '.msg').read_text(encoding='utf-8')
        return self._texts[key]

    def full_text(self, type_name: str) -> str:
        """The definition rosbag2 stores as the schema: the type's .msg text, then each
        nested type (depth first, dependencies in sorted order, each once) after a
        separator line and ``MSG: pkg/Type``."""
        seen = set()

        def append(name: str, depth: int) -> str:
            if depth <= 0:
                raise DefinitionNotFoundError(f'reached max recursion depth resolving {type_name}')
            text = self.msg_text(name)
            result = text
            for dependency in sorted(_dependencies(text, split_type_name(name)[0])):
                if dependency not in seen:
                    seen.add(dependency)
                    result += f'\n{DEFINITION_SEPARATOR}\nMSG: {dependency}\n'
                    result += append(dependency, depth - 1)
            return result

        return append(type_name, MAX_DEFINITION_DEPTH)

    def type_hash(self, type_name: str) -> str:
        """RIHS01_... of the type from its installed type description, '' if none."""
        key = normalize_type_name(type_name)
        try:
            description = json.loads(self._interface_file(key, '.json').read_text(encoding='utf-8'))
        except (DefinitionNotFoundError, OSError, ValueError):
            return ''
        for entry in description.get('type_hashes', []):
            if entry.get('type_name') == key:
                return entry.get('hash_string', '')
        return ''


def root_definition(definition: str) -> str:
    """The top-level type's own text of a full (concatenated) definition."""
    return definition.split(f'\n{DEFINITION_SEPARATOR}\n', 1)[0]


def starts_with_header(definition: str) -> bool:
    """True when the type's first field is ``std_msgs/Header header``: its CDR then
    starts with the header stamp (see cdr_header_stamp_ns)."""
    for line in root_definition(definition).splitlines():
        parts = line.split('#', 1)[0].split()
        if not parts:
            continue
        if len(parts) < 2:
            return False
        if '=' in parts[1] or len(parts) > 2 and parts[2].startswith('='):
            continue  # a constant ("uint8 ENTRY=0"), not a field
        return parts[0] in ('std_msgs/Header', 'std_msgs/msg/Header') and parts[1] == 'header'
    return False


def cdr_header_stamp_ns(data: bytes) -> Optional[int]:
    """The header stamp (ns) of a CDR message whose first field is std_msgs/Header,
    or None when the bytes are too short or the stamp is zero (unset)."""
    if len(data) < 12:
        return None
    little = data[1] & 1  # encapsulation: 0x0001 CDR_LE, 0x0000 CDR_BE (also PL_CDR, CDR2)
    sec, nanosec = struct.unpack('<iI' if little else '>iI', data[4:12])
    if nanosec >= 1_000_000_000 or sec < 0:
        return None
    stamp = sec * 1_000_000_000 + nanosec
    return stamp or None


# ---------------------------------------------------------------- QoS profiles

_QOS_NAMES = {
    'history': {0: 'system_default', 1: 'keep_last', 2: 'keep_all', 3: 'unknown'},
    'reliability': {0: 'system_default', 1: 'reliable', 2: 'best_effort', 3: 'unknown',
                    4: 'best_available'},
    'durability': {0: 'system_default', 1: 'transient_local', 2: 'volatile', 3: 'unknown',
                   4: 'best_available'},
    'liveliness': {0: 'system_default', 1: 'automatic', 2: 'manual_by_node',
                   3: 'manual_by_topic', 4: 'unknown', 5: 'best_available'},
}
_ZERO_TIME = {'sec': 0, 'nsec': 0}


def normalize_qos(profile: dict) -> dict:
    """One offered QoS profile as metadata version 9 writes it: policies as lower-case
    names (version <= 8 wrote the rmw enum values), durations as {sec, nsec}."""
    result = {}
    for policy in ('history', 'reliability', 'durability', 'liveliness'):
        value = profile.get(policy, 'system_default')
        if isinstance(value, int):
            value = _QOS_NAMES[policy].get(value, 'unknown')
        result[policy] = str(value).lower()
    result['depth'] = int(profile.get('depth', 0))
    for duration in ('deadline', 'lifespan', 'liveliness_lease_duration'):
        value = profile.get(duration) or _ZERO_TIME
        result[duration] = {'sec': int(value.get('sec', 0)), 'nsec': int(value.get('nsec', 0))}
    result['avoid_ros_namespace_conventions'] = bool(
        profile.get('avoid_ros_namespace_conventions', False))
    order = ('history', 'depth', 'reliability', 'durability', 'deadline', 'lifespan',
             'liveliness', 'liveliness_lease_duration', 'avoid_ros_namespace_conventions')
    return {key: result[key] for key in order}


def dump_qos_profiles(profiles: Iterable[dict]) -> str:
    """The ``offered_qos_profiles`` channel metadata string (a YAML list)."""
    profiles = [normalize_qos(p) for p in profiles]
    if not profiles:
        return ''
    return yaml.safe_dump(profiles, sort_keys=False, default_flow_style=False).rstrip('\n')


def parse_qos_profiles(text) -> list:
    """Inverse of dump_qos_profiles; also accepts an already-parsed list."""
    if not text:
        return []
    profiles = yaml.safe_load(text) if isinstance(text, str) else text
    if not isinstance(profiles, list):
        raise ValueError('offered_qos_profiles is not a YAML list')
    return [normalize_qos(p) for p in profiles]


# ---------------------------------------------------------------- writing

@dataclass
class _TopicState:
    name: str
    type: str
    channel_id: int
    offered_qos_profiles: list
    type_hash: str
    message_count: int = 0


class BagWriter:
    """Writes one rosbag2 bag directory (one MCAP file plus metadata.yaml).

    ``add_topic`` before the first ``write`` to a topic; ``close`` finishes the file,
    renames it from ``.mcap.part`` and writes metadata.yaml. Used as a context manager
    it closes on success and aborts (leaving only the ``.part`` file) on an exception.
    Not thread-safe: call it from one thread.
    """

    def __init__(self, bag_dir, *, compression: str = 'zstd', chunk_size: int = 1 << 20,
                 definitions: Optional[DefinitionSource] = None):
        if compression not in _COMPRESSION:
            raise ValueError(f'compression must be one of {sorted(_COMPRESSION)}')
        self.bag_dir = Path(bag_dir)
        if self.bag_dir.exists() and (not self.bag_dir.is_dir() or any(self.bag_dir.iterdir())):
            raise BagError(self.bag_dir, 'output exists and is not an empty directory')
        try:
            self.bag_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise BagError(self.bag_dir, f'cannot create the bag directory: {error.strerror}')
        self.file_name = f'{self.bag_dir.name}_0.mcap'
        self.path = self.bag_dir / self.file_name
        self.part_path = self.bag_dir / (self.file_name + PART_SUFFIX)
        self._definitions = definitions or DefinitionSource()
        self._file = open(self.part_path, 'wb')
        self._writer = Writer(self._file, chunk_size=chunk_size,
                              compression=_COMPRESSION[compression], enable_crcs=True)
        self._writer.start(profile=PROFILE, library=LIBRARY)
        self._topics: dict = {}
        self._schemas: dict = {}
        self.message_count = 0
        self.data_bytes = 0
        self.start_ns: Optional[int] = None
        self.end_ns: Optional[int] = None
        self.closed = False

    @property
    def topics(self) -> dict:
        return {name: state.type for name, state in self._topics.items()}

    def has_topic(self, topic: str) -> bool:
        return topic in self._topics

    def add_topic(self, topic: str, type_name: str, offered_qos_profiles: Iterable[dict] = (),
                  *, definition: Optional[str] = None, type_hash: Optional[str] = None) -> None:
        """Registers a topic. The definition defaults to the installed .msg files;
        UnknownMessageTypeError when they cannot be found."""
        self._check_open()
        if not topic.startswith('/'):
            raise ValueError(f'topic names are absolute: {topic!r}')
        if topic in self._topics:
            raise ValueError(f'topic {topic} was already added')
        try:
            type_name = normalize_type_name(type_name)
        except ValueError as error:
            raise UnknownMessageTypeError(self.part_path, str(error), where=f'topic {topic}')
        if type_name not in self._schemas:
            if definition is None:
                try:
                    definition = self._definitions.full_text(type_name)
                except (DefinitionNotFoundError, OSError) as error:
                    raise UnknownMessageTypeError(
                        self.part_path, f'no definition of {type_name}: {error}',
                        where=f'topic {topic}')
            self._schemas[type_name] = self._writer.register_schema(
                name=type_name, encoding=SCHEMA_ENCODING, data=definition.encode('utf-8'))
        if type_hash is None:
            type_hash = self._definitions.type_hash(type_name)
        profiles = [normalize_qos(p) for p in offered_qos_profiles]
        channel_id = self._writer.register_channel(
            topic=topic, message_encoding=MESSAGE_ENCODING, schema_id=self._schemas[type_name],
            metadata={'offered_qos_profiles': dump_qos_profiles(profiles),
                      'topic_type_hash': type_hash})
        self._topics[topic] = _TopicState(topic, type_name, channel_id, profiles, type_hash)

    def write(self, topic: str, data: bytes, log_time_ns: int,
              publish_time_ns: Optional[int] = None, sequence: int = 0) -> None:
        self._check_open()
        state = self._topics.get(topic)
        if state is None:
            raise ValueError(f'topic {topic} was not added to the bag')
        if log_time_ns < 0:
            raise ValueError(f'negative log time {log_time_ns}')
        publish_time_ns = log_time_ns if publish_time_ns is None else publish_time_ns
        self._writer.add_message(channel_id=state.channel_id, log_time=int(log_time_ns),
                                 data=bytes(data), publish_time=max(0, int(publish_time_ns)),
                                 sequence=int(sequence) & 0xFFFFFFFF)
        state.message_count += 1
        self.message_count += 1
        self.data_bytes += len(data)
        self.start_ns = log_time_ns if self.start_ns is None else min(self.start_ns, log_time_ns)
        self.end_ns = log_time_ns if self.end_ns is None else max(self.end_ns, log_time_ns)

    def metadata(self) -> dict:
        """The rosbag2_bagfile_information document (metadata version 9)."""
        start = self.start_ns or 0
        duration = (self.end_ns - self.start_ns) if self.start_ns is not None else 0
        return {
            'version': METADATA_VERSION,
            'storage_identifier': STORAGE_IDENTIFIER,
            'duration': {'nanoseconds': duration},
            'starting_time': {'nanoseconds_since_epoch': start},
            'message_count': self.message_count,
            'topics_with_message_count': [
                {'topic_metadata': {
                    'name': state.name,
                    'type': state.type,
                    'serialization_format': MESSAGE_ENCODING,
                    'offered_qos_profiles': state.offered_qos_profiles,
                    'type_description_hash': state.type_hash},
                 'message_count': state.message_count}
                for state in self._topics.values()],
            'compression_format': '',
            'compression_mode': '',
            'relative_file_paths': [self.file_name],
            'files': [{'path': self.file_name,
                       'starting_time': {'nanoseconds_since_epoch': start},
                       'duration': {'nanoseconds': duration},
                       'message_count': self.message_count}],
            'custom_data': {},
            'ros_distro': os.environ.get('ROS_DISTRO') or 'kilted',
        }

    def close(self) -> Path:
        """Finishes the MCAP file, makes it visible under its final name, writes
        metadata.yaml; returns the bag directory."""
        if self.closed:
            return self.bag_dir
        information = self.metadata()
        self._writer.add_metadata('rosbag2', {'serialized_metadata': _dump_yaml(information)})
        self._writer.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self.closed = True
        os.replace(self.part_path, self.path)
        tmp = self.bag_dir / (METADATA_FILE + '.tmp')
        tmp.write_text(_dump_yaml({'rosbag2_bagfile_information': information}), encoding='utf-8')
        os.replace(tmp, self.bag_dir / METADATA_FILE)
        _fsync_dir(self.bag_dir)
        return self.bag_dir

    def abort(self) -> None:
        """Stops without finishing: only the ``.part`` file stays (never mistaken for a bag)."""
        if not self.closed:
            self.closed = True
            try:
                self._file.close()
            except OSError:
                pass

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f'{self.path}: the bag is closed')

    def __enter__(self) -> 'BagWriter':
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _dump_yaml(document) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reading

@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag, from its channel and schema records."""

    name: str
    type: str
    serialization_format: str
    offered_qos_profiles: tuple
    type_description_hash: str
    message_count: int
    definition: str
    definition_encoding: str
    file: str   # the .mcap file and its channel record, for error messages
    where: str  # "channel record at offset N"


@dataclass(frozen=True)
class BagMessage:
    topic: str
    type: str
    data: bytes = field(repr=False)
    log_time: int
    publish_time: int
    sequence: int


_RECORD_TYPES = {
    Opcode.SCHEMA: Schema, Opcode.CHANNEL: Channel, Opcode.STATISTICS: Statistics,
    Opcode.CHUNK_INDEX: ChunkIndex, Opcode.METADATA_INDEX: MetadataIndex,
    Opcode.METADATA: Metadata, Opcode.HEADER: Header, Opcode.FOOTER: Footer,
    Opcode.DATA_END: DataEnd, Opcode.CHUNK: Chunk,
}


def _opcode_name(opcode: int) -> str:
    try:
        return Opcode(opcode).name.lower().replace('_', ' ')
    except ValueError:
        return f'opcode 0x{opcode:02x}'


class _McapFile:
    """One MCAP file of a bag, opened through its summary section with every record
    checked; messages are read chunk by chunk through the chunk indexes."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._file = open(path, 'rb')
        except OSError as error:
            raise BagError(path, f'cannot open: {error.strerror}')
        try:
            self._open()
        except BaseException:
            self._file.close()
            raise

    def close(self) -> None:
        self._file.close()

    # -- low level

    def _read_at(self, offset: int, length: int) -> bytes:
        self._file.seek(offset)
        data = self._file.read(length)
        if len(data) != length:
            raise TruncatedBagError(self.path, f'file ends {length - len(data)} bytes early',
                                    where=f'offset {offset}')
        return data

    def _parse(self, opcode: int, body: bytes, where: str):
        record_type = _RECORD_TYPES.get(opcode)
        if record_type is None and opcode != Opcode.MESSAGE:
            return None
        if opcode == Opcode.MESSAGE and len(body) < 22:
            raise CorruptBagError(self.path, 'message record too short', where=where)
        stream = ReadDataStream(io.BytesIO(body))
        try:
            record = (Message.read(stream, len(body)) if opcode == Opcode.MESSAGE
                      else record_type.read(stream))
        except Exception as error:  # struct.error, UnicodeDecodeError, EndOfFile, ...
            problem = str(error) or type(error).__name__
            raise CorruptBagError(self.path, f'cannot decode the record ({problem})', where=where)
        if stream.count > len(body):
            raise CorruptBagError(self.path, 'record is longer than its length field', where=where)
        if opcode == Opcode.CHUNK:
            expected = 8 + 8 + 8 + 4 + 4 + len(record.compression.encode()) + 8 + len(record.data)
            if expected != len(body):
                raise CorruptBagError(self.path, 'chunk data length does not match the record',
                                      where=where)
        return record

    def _records(self, data: bytes, base: int, context: str = '') -> Iterator:
        """(offset, opcode, record) for each record of a byte range starting at file
        offset ``base`` (or inside a chunk, named by ``context``)."""
        position = 0
        while position < len(data):
            offset = base + position
            where = f'{context}record at offset {offset}'
            if len(data) - position < _RECORD_PREFIX:
                raise CorruptBagError(self.path, 'record header cut short', where=where)
            opcode, length = struct.unpack_from('<BQ', data, position)
            where = f'{context}{_opcode_name(opcode)} record at offset {offset}'
            start = position + _RECORD_PREFIX
            if length > len(data) - start:
                raise CorruptBagError(
                    self.path, f'record length {length} runs past the end of its section',
                    where=where)
            yield offset, opcode, self._parse(opcode, data[start:start + length], where)
            position = start + length

    # -- opening

    def _open(self) -> None:
        self._file.seek(0, io.SEEK_END)
        self.size = self._file.tell()
        magic = len(MCAP_MAGIC)
        head = self._read_at(0, min(self.size, magic))
        if head != MCAP_MAGIC[:len(head)]:
            raise BagError(self.path, 'not an MCAP file (bad magic)', where='offset 0')
        if self.size < magic + _RECORD_PREFIX:
            raise TruncatedBagError(self.path, f'file is only {self.size} bytes: no header record')
        opcode, length = struct.unpack('<BQ', self._read_at(magic, _RECORD_PREFIX))
        where = f'header record at offset {magic}'
        if opcode != Opcode.HEADER:
            raise CorruptBagError(self.path, f'the file starts with a {_opcode_name(opcode)} '
                                  'record, not a header', where=where)
        if magic + _RECORD_PREFIX + length > self.size:
            raise TruncatedBagError(self.path, 'header record cut short', where=where)
        header = self._parse(opcode, self._read_at(magic + _RECORD_PREFIX, length), where)
        self.profile, self.library = header.profile, header.library
        if header.profile != PROFILE:
            raise BagError(self.path, f'MCAP profile is {header.profile!r}, not {PROFILE!r} '
                           '(not a ROS 2 bag)', where=where)
        if (self.size < 2 * magic + _FOOTER_RECORD_SIZE
                or self._read_at(self.size - magic, magic) != MCAP_MAGIC):
            raise TruncatedBagError(
                self.path, f'no MCAP footer at the end of the file ({self.size} bytes): the '
                'recording was not closed cleanly or the file was cut short')
        footer_offset = self.size - magic - _FOOTER_RECORD_SIZE
        footer_bytes = self._read_at(footer_offset, _FOOTER_RECORD_SIZE)
        records = list(self._records(footer_bytes, footer_offset))
        footer = records[0][2] if len(records) == 1 else None
        if not isinstance(footer, Footer):
            raise CorruptBagError(self.path, 'no footer record before the closing magic',
                                  where=f'offset {footer_offset}')
        self.schemas: dict = {}
        self.channels: dict = {}
        self.channel_offsets: dict = {}
        self.chunk_indexes: list = []
        self.statistics: Optional[Statistics] = None
        self.metadata: dict = {}
        self._unindexed: Optional[list] = None
        if footer.summary_start == 0:
            self._scan_data_section(footer_offset)
            return
        if not magic < footer.summary_start <= footer_offset:
            raise CorruptBagError(self.path, f'summary start {footer.summary_start} is outside '
                                  'the file', where=f'footer record at offset {footer_offset}')
        summary = self._read_at(footer.summary_start, footer_offset - footer.summary_start)
        if footer.summary_crc:
            crc = zlib.crc32(footer_bytes[:-4], zlib.crc32(summary))
            if crc != footer.summary_crc:
                raise CorruptBagError(self.path, 'summary section CRC mismatch (the index is '
                                      'damaged)', where=f'summary at offset {footer.summary_start}')
        for offset, _, record in self._records(summary, footer.summary_start):
            self._take(offset, record)
        self._read_indexed_metadata()
        if not self.chunk_indexes and (self.statistics is None or self.statistics.message_count):
            self._scan_data_section(footer_offset)  # messages outside chunks: no index to use
            return
        self._check_channels()

    def _take(self, offset: int, record) -> None:
        if isinstance(record, Schema):
            self.schemas[record.id] = record
        elif isinstance(record, Channel):
            self.channels[record.id] = record
            self.channel_offsets.setdefault(record.id, offset)
        elif isinstance(record, ChunkIndex):
            self.chunk_indexes.append(record)
        elif isinstance(record, Statistics):
            self.statistics = record
        elif isinstance(record, MetadataIndex):
            self.metadata[record.name] = record
        elif isinstance(record, Metadata):
            self.metadata[record.name] = record

    def _read_indexed_metadata(self) -> None:
        for name, index in list(self.metadata.items()):
            if isinstance(index, MetadataIndex):
                where = f'metadata record at offset {index.offset}'
                if index.offset + index.length > self.size:
                    raise CorruptBagError(self.path, 'metadata index points past the end',
                                          where=where)
                data = self._read_at(index.offset, index.length)
                records = list(self._records(data, index.offset))
                if len(records) != 1 or not isinstance(records[0][2], Metadata):
                    raise CorruptBagError(self.path, 'metadata index does not point at a '
                                          'metadata record', where=where)
                self.metadata[name] = records[0][2]

    def _check_channels(self) -> None:
        for channel_id, channel in self.channels.items():
            where = (f'channel record at offset {self.channel_offsets[channel_id]} '
                     f'(topic {channel.topic})')
            schema = self.schemas.get(channel.schema_id)
            if schema is None or not schema.name:
                raise UnknownMessageTypeError(
                    self.path, f'topic {channel.topic} has no message type (schema id '
                    f'{channel.schema_id} is not in the file)', where=where)
            try:
                split_type_name(schema.name)
            except ValueError as error:
                raise UnknownMessageTypeError(self.path, str(error), where=where)
            if channel.message_encoding != MESSAGE_ENCODING:
                raise UnknownMessageTypeError(
                    self.path, f'topic {channel.topic} is encoded as {channel.message_encoding!r}, '
                    f'not {MESSAGE_ENCODING!r}', where=where)

    def _scan_data_section(self, footer_offset: int) -> None:
        """No summary (a writer that skipped it): read every record from the start."""
        magic = len(MCAP_MAGIC)
        self._unindexed = []
        for offset, _, record in self._records(self._read_at(magic, footer_offset - magic), magic):
            if isinstance(record, Chunk):
                for inner_offset, message in self._chunk_messages(record, offset):
                    self._unindexed.append((message.log_time, offset, inner_offset, message))
            elif isinstance(record, Message):
                self._unindexed.append((record.log_time, offset, 0, record))
            else:
                self._take(offset, record)
        self._unindexed.sort(key=lambda item: item[:3])
        self._check_channels()

    # -- messages

    def _chunk_messages(self, chunk: Chunk, offset: int) -> list:
        where = f'chunk record at offset {offset}'
        try:
            if chunk.compression == 'zstd':
                import zstandard
                data = zstandard.ZstdDecompressor().decompress(
                    chunk.data, max_output_size=chunk.uncompressed_size)
            elif chunk.compression == 'lz4':
                import lz4.frame
                data = lz4.frame.decompress(chunk.data)
            elif chunk.compression == '':
                data = chunk.data
            else:
                raise BagError(self.path, f'unsupported chunk compression {chunk.compression!r}',
                               where=where)
        except BagError:
            raise
        except Exception as error:
            raise CorruptBagError(self.path, f'cannot decompress the chunk ({error})', where=where)
        if len(data) != chunk.uncompressed_size:
            raise CorruptBagError(self.path, f'chunk holds {len(data)} bytes, its header says '
                                  f'{chunk.uncompressed_size}', where=where)
        if chunk.uncompressed_crc and zlib.crc32(data) != chunk.uncompressed_crc:
            raise CorruptBagError(self.path, 'chunk CRC mismatch (the data is damaged)',
                                  where=where)
        messages = []
        ranged = chunk.message_start_time or chunk.message_end_time
        for inner_offset, opcode, record in self._records(data, 0, context=f'{where}, '):
            if isinstance(record, Message):
                if record.channel_id not in self.channels:
                    raise CorruptBagError(
                        self.path, f'message of unknown channel {record.channel_id}',
                        where=f'{where}, message record at offset {inner_offset}')
                if ranged and not (chunk.message_start_time <= record.log_time
                                   <= chunk.message_end_time):
                    raise CorruptBagError(
                        self.path, f'time runs backwards: log time {record.log_time} is outside '
                        f'the chunk\'s range {chunk.message_start_time}..{chunk.message_end_time}',
                        where=f'{where}, message record at offset {inner_offset}')
                messages.append((inner_offset, record))
            elif isinstance(record, (Schema, Channel)):
                if isinstance(record, Channel) and record.id not in self.channels:
                    self.channels[record.id] = record
                    self.channel_offsets[record.id] = offset
                elif isinstance(record, Schema) and record.id not in self.schemas:
                    self.schemas[record.id] = record
        return messages

    def _load_chunk(self, index: ChunkIndex) -> list:
        offset = index.chunk_start_offset
        where = f'chunk record at offset {offset}'
        if offset < len(MCAP_MAGIC) or offset + index.chunk_length > self.size:
            raise CorruptBagError(self.path, 'chunk index points outside the file', where=where)
        records = list(self._records(self._read_at(offset, index.chunk_length), offset))
        if len(records) != 1 or not isinstance(records[0][2], Chunk):
            raise CorruptBagError(self.path, 'chunk index does not point at a chunk record',
                                  where=where)
        chunk = records[0][2]
        if (chunk.message_start_time, chunk.message_end_time) != (
                index.message_start_time, index.message_end_time):
            raise CorruptBagError(
                self.path, f'the chunk spans log times {chunk.message_start_time}..'
                f'{chunk.message_end_time}, its index says {index.message_start_time}..'
                f'{index.message_end_time} (messages would come out of time order)', where=where)
        return self._chunk_messages(chunk, offset)

    def messages(self, channel_ids: Optional[set] = None) -> Iterator[Message]:
        """Message records in log-time order (file order among equal times)."""
        if self._unindexed is not None:
            for _, _, _, message in self._unindexed:
                if channel_ids is None or message.channel_id in channel_ids:
                    yield message
            return
        heap = []
        for index in self.chunk_indexes:
            if (channel_ids is not None and index.message_index_offsets
                    and not channel_ids & index.message_index_offsets.keys()):
                continue
            heap.append((index.message_start_time, 0, index.chunk_start_offset, 0, index))
        heapq.heapify(heap)
        last = None
        while heap:
            log_time, kind, chunk_offset, inner_offset, item = heapq.heappop(heap)
            if kind == 0:
                for inner, message in self._load_chunk(item):
                    if channel_ids is None or message.channel_id in channel_ids:
                        heapq.heappush(heap, (message.log_time, 1, chunk_offset, inner, message))
            else:
                if last is not None and log_time < last:
                    raise CorruptBagError(
                        self.path, f'time runs backwards: log time {log_time} comes after '
                        f'{last}', where=f'chunk record at offset {chunk_offset}, message '
                        f'record at offset {inner_offset}')
                last = log_time
                yield item


class BagReader:
    """Reads a bag: a rosbag2 directory (metadata.yaml + .mcap files) or one .mcap file.

    Opening checks the file's structure (magic, footer, summary CRC, every summary
    record, that each topic has a ROS 2 message type); ``messages`` reads and checks
    chunks as it goes and yields messages in log-time order; ``validate`` reads every
    chunk up front. Problems raise BagError subclasses naming the file and record.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.bag_metadata: dict = {}
        self._files = []
        try:
            for file_path in self._resolve_files():
                self._files.append(_McapFile(file_path))
        except BaseException:
            self.close()
            raise
        self._build_topics()

    def _resolve_files(self) -> list:
        path = self.path
        if path.name.endswith(PART_SUFFIX):
            raise TruncatedBagError(path, 'this is an unfinished recording (.part): the recorder '
                                    'did not close it')
        if not path.exists():
            part = path.with_name(path.name + PART_SUFFIX)
            if part.exists():
                raise TruncatedBagError(part, 'only an unfinished recording (.part) exists')
            raise BagError(path, 'no such bag')
        if path.is_file():
            return [path]
        metadata_path = path / METADATA_FILE
        if metadata_path.is_file():
            try:
                document = yaml.safe_load(metadata_path.read_text(encoding='utf-8'))
                information = document['rosbag2_bagfile_information']
                storage = information['storage_identifier']
                relative = list(information['relative_file_paths'])
            except (yaml.YAMLError, TypeError, KeyError, UnicodeDecodeError) as error:
                raise CorruptBagError(metadata_path, f'not a rosbag2 metadata file ({error})')
            if storage != STORAGE_IDENTIFIER:
                raise BagError(metadata_path, f'storage {storage!r} is not supported (only mcap)')
            self.bag_metadata = information
            files = []
            for name in relative:
                file_path = path / name
                if not file_path.exists() and (path / Path(name).name).exists():
                    file_path = path / Path(name).name  # older rosbag2 wrote "<bag>/<file>"
                if not file_path.exists():
                    part = file_path.with_name(file_path.name + PART_SUFFIX)
                    if part.exists():
                        raise TruncatedBagError(part, 'unfinished recording (.part): the recorder '
                                                'did not close it')
                    raise BagError(file_path, f'listed in {METADATA_FILE} but missing')
                files.append(file_path)
            if not files:
                raise BagError(metadata_path, 'lists no files')
            return files
        files = sorted(p for p in path.glob('*.mcap'))
        if not files:
            parts = sorted(path.glob('*.mcap' + PART_SUFFIX))
            if parts:
                raise TruncatedBagError(parts[0], 'unfinished recording (.part): the recorder did '
                                        'not close it')
            raise BagError(path, 'no metadata.yaml and no .mcap file: not a bag')
        return files

    def _build_topics(self) -> None:
        topics: dict = {}
        self._channel_topics = []  # per file: channel id -> (topic, type)
        for mcap_file in self._files:
            counts = mcap_file.statistics.channel_message_counts if mcap_file.statistics else {}
            by_channel = {}
            for channel_id, channel in sorted(mcap_file.channels.items()):
                schema = mcap_file.schemas[channel.schema_id]
                type_name = normalize_type_name(schema.name)
                where = f'channel record at offset {mcap_file.channel_offsets[channel_id]}'
                by_channel[channel_id] = (channel.topic, type_name)
                try:
                    profiles = tuple(parse_qos_profiles(
                        channel.metadata.get('offered_qos_profiles', '')))
                except (yaml.YAMLError, ValueError, AttributeError, TypeError) as error:
                    raise CorruptBagError(mcap_file.path, f'bad offered_qos_profiles ({error})',
                                          where=where)
                previous = topics.get(channel.topic)
                if previous is not None and previous.type != type_name:
                    raise BagError(mcap_file.path, f'topic {channel.topic} has two types: '
                                   f'{previous.type} and {type_name}', where=where)
                count = counts.get(channel_id, 0) + (previous.message_count if previous else 0)
                topics[channel.topic] = TopicInfo(
                    name=channel.topic, type=type_name,
                    serialization_format=channel.message_encoding,
                    offered_qos_profiles=profiles,
                    type_description_hash=channel.metadata.get('topic_type_hash', ''),
                    message_count=count,
                    definition=schema.data.decode('utf-8', errors='replace'),
                    definition_encoding=schema.encoding, file=str(mcap_file.path), where=where)
            self._channel_topics.append(by_channel)
        self.topics: dict = topics

    @property
    def message_count(self) -> int:
        return sum(t.message_count for t in self.topics.values())

    @property
    def start_ns(self) -> Optional[int]:
        starts = [f.statistics.message_start_time for f in self._files
                  if f.statistics and f.statistics.message_count]
        return min(starts) if starts else None

    @property
    def end_ns(self) -> Optional[int]:
        ends = [f.statistics.message_end_time for f in self._files
                if f.statistics and f.statistics.message_count]
        return max(ends) if ends else None

    @property
    def files(self) -> list:
        return [f.path for f in self._files]

    def serialized_metadata(self) -> dict:
        """The 'rosbag2' metadata record of the first file, parsed ({} if absent)."""
        for mcap_file in self._files:
            record = mcap_file.metadata.get('rosbag2')
            if isinstance(record, Metadata) and 'serialized_metadata' in record.metadata:
                try:
                    return yaml.safe_load(record.metadata['serialized_metadata']) or {}
                except yaml.YAMLError as error:
                    raise CorruptBagError(mcap_file.path, f'bad serialized_metadata ({error})',
                                          where='rosbag2 metadata record')
        return {}

    def messages(self, topics: Optional[Iterable[str]] = None) -> Iterator[BagMessage]:
        """Messages in log-time order, only of ``topics`` when given."""
        wanted = None if topics is None else set(topics)
        streams = []
        for mcap_file, by_channel in zip(self._files, self._channel_topics):
            ids = None if wanted is None else {c for c, (t, _) in by_channel.items() if t in wanted}
            streams.append(self._file_messages(mcap_file, by_channel, ids))
        if len(streams) == 1:
            return streams[0]
        return heapq.merge(*streams, key=lambda m: m.log_time)

    @staticmethod
    def _file_messages(mcap_file: _McapFile, by_channel: dict, ids) -> Iterator[BagMessage]:
        for message in mcap_file.messages(ids):
            typed = by_channel.get(message.channel_id)
            if typed is None:  # a channel that only a chunk declared (no summary copy)
                channel = mcap_file.channels[message.channel_id]
                schema = mcap_file.schemas.get(channel.schema_id)
                typed = by_channel[message.channel_id] = (
                    channel.topic, normalize_type_name(schema.name) if schema else '')
            yield BagMessage(topic=typed[0], type=typed[1], data=message.data,
                             log_time=message.log_time, publish_time=message.publish_time,
                             sequence=message.sequence)

    def check_definitions(self, topics: Iterable[str]) -> None:
        """UnknownMessageTypeError (naming the file and channel) for a topic recorded
        with another definition of its type than the installed one: its bytes were
        written for another layout, and subscribers would misread them."""
        definitions = DefinitionSource()
        for topic in topics:
            info = self.topics[topic]
            installed = definitions.type_hash(info.type)
            if info.type_description_hash and installed and info.type_description_hash != installed:
                raise UnknownMessageTypeError(
                    info.file, f'topic {topic} was recorded with another definition of '
                    f'{info.type} ({info.type_description_hash}) than the installed one '
                    f'({installed})', where=info.where)

    def check_stamp_order(self, topics: Iterable[str]) -> int:
        """Reads the messages of ``topics``; CorruptBagError (naming the file and the
        message) at the first whose publish time -- its header stamp, where the type has
        a header -- is older than the previous one on its topic: the source's clock ran
        backwards, and whatever decides from stamps would go wrong. Returns the count."""
        last, seen = {}, {}
        for message in self.messages(list(topics)):
            index = seen.get(message.topic, 0)
            seen[message.topic] = index + 1
            previous = last.get(message.topic)
            if previous is not None and message.publish_time < previous:
                raise CorruptBagError(
                    self.topics[message.topic].file,
                    f'time runs backwards on {message.topic}: stamp {message.publish_time} is '
                    f'{(previous - message.publish_time) / 1e9:.3f} s before the previous '
                    f'message\'s', where=f'{message.topic} message {index} (log time '
                    f'{message.log_time})')
            last[message.topic] = message.publish_time
        return sum(seen.values())

    def validate(self) -> int:
        """Reads and checks every chunk; returns the message count. CorruptBagError when a
        chunk is damaged or the messages do not add up to the file's statistics."""
        total = 0
        for mcap_file in self._files:
            count = sum(1 for _ in mcap_file.messages())
            expected = mcap_file.statistics.message_count if mcap_file.statistics else count
            if count != expected:
                raise CorruptBagError(mcap_file.path, f'holds {count} messages, its statistics '
                                      f'record says {expected}', where='statistics record')
            total += count
        return total

    def close(self) -> None:
        for mcap_file in self._files:
            mcap_file.close()
        self._files = []

    def __enter__(self) -> 'BagReader':
        return self

    def __exit__(self, *exc) -> None:
        self.close()
