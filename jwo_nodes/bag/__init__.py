"""jwo's bag tools: rosbag2 bags in the MCAP storage format (``jwo record``, ``jwo replay``).

``jwo_nodes.bag.format`` is pure (no rclpy): it writes and reads the files from
serialized CDR bytes, so ``ros2 bag info/play`` on a full ROS 2 install, the ``mcap``
and ``mcap-ros2-support`` libraries and ``rosbags`` open what ``jwo record`` writes.
The ROS side lives in ``recorder`` and ``replayer``.
"""
from jwo_nodes.bag.format import (BagError, BagMessage, BagReader, BagWriter,
                                  CorruptBagError, DefinitionNotFoundError, DefinitionSource,
                                  TopicInfo, TruncatedBagError, UnknownMessageTypeError)

__all__ = ['BagError', 'BagMessage', 'BagReader', 'BagWriter', 'CorruptBagError',
           'DefinitionNotFoundError', 'DefinitionSource', 'TopicInfo', 'TruncatedBagError',
           'UnknownMessageTypeError']
