"""Deterministic CDR serialization of ROS 2 messages (XCDR1, little endian).

rclpy's ``serialize_message`` leaves the alignment padding between fields as it found
the buffer (whatever bytes were there), so serializing the same message twice can give
different bytes. A bag written from a simulation must come out byte for byte the same
every time, so ``serialize`` writes the same encoding with zeroed padding: the bytes
``serialize_message`` gives, up to the padding (``deserialize_message`` reads both
back to equal messages; the tests check it).

Walks the message's rosidl type description (``SLOT_TYPES``): basic types, strings,
nested messages, arrays and sequences of them. Pure: no rclpy (the message classes
come from the generated packages). Wide strings are not supported.
"""
import struct

from rosidl_parser.definition import (AbstractNestedType, AbstractString, AbstractWString,
                                      Array, BasicType, NamespacedType)

# Little-endian CDR, no options (what Fast DDS writes for ROS 2 messages).
ENCAPSULATION = b'\x00\x01\x00\x00'

_BASIC = {
    'boolean': '?', 'octet': 'B', 'char': 'B', 'uint8': 'B', 'int8': 'b',
    'int16': 'h', 'uint16': 'H', 'int32': 'i', 'uint32': 'I',
    'int64': 'q', 'uint64': 'Q', 'float': 'f', 'double': 'd', 'long double': 'd',
}


class _Writer:
    def __init__(self):
        self.buffer = bytearray(ENCAPSULATION)

    def align(self, size: int) -> None:
        # Alignment counts from the end of the encapsulation header.
        misalignment = (len(self.buffer) - 4) % size
        if misalignment:
            self.buffer.extend(b'\x00' * (size - misalignment))

    def basic(self, typename: str, value) -> None:
        code = _BASIC[typename]
        size = struct.calcsize(code)
        self.align(size)
        if typename == 'char' and isinstance(value, str):
            value = ord(value)
        elif typename == 'octet' and isinstance(value, (bytes, bytearray)):
            value = value[0]
        self.buffer.extend(struct.pack('<' + code, value))

    def basics(self, typename: str, values) -> None:
        code = _BASIC[typename]
        values = list(values)
        if not values:
            return
        if typename == 'octet' and isinstance(values[0], (bytes, bytearray)):
            values = [v[0] for v in values]
        self.align(struct.calcsize(code))
        self.buffer.extend(struct.pack(f'<{len(values)}{code}', *values))

    def string(self, value: str) -> None:
        data = value.encode('utf-8') + b'\x00'
        self.basic('uint32', len(data))
        self.buffer.extend(data)


def _write(writer: _Writer, slot_type, value) -> None:
    if isinstance(slot_type, BasicType):
        writer.basic(slot_type.typename, value)
    elif isinstance(slot_type, AbstractWString):
        raise TypeError('wide strings are not supported')
    elif isinstance(slot_type, AbstractString):
        writer.string(value)
    elif isinstance(slot_type, NamespacedType):
        _write_message(writer, value)
    elif isinstance(slot_type, AbstractNestedType):
        items = list(value)
        if not isinstance(slot_type, Array):
            writer.basic('uint32', len(items))
        element = slot_type.value_type
        if isinstance(element, BasicType):
            writer.basics(element.typename, items)
        else:
            for item in items:
                _write(writer, element, item)
    else:
        raise TypeError(f'unsupported field type {slot_type!r}')


def _write_message(writer: _Writer, msg) -> None:
    names = list(type(msg).get_fields_and_field_types())
    for name, slot_type in zip(names, type(msg).SLOT_TYPES):
        _write(writer, slot_type, getattr(msg, name))
    if not names:  # an empty message is one dummy uint8 (rosidl convention)
        writer.basic('uint8', 0)


def serialize(msg) -> bytes:
    """The CDR bytes of a ROS 2 message with zeroed padding."""
    writer = _Writer()
    _write_message(writer, msg)
    return bytes(writer.buffer)
