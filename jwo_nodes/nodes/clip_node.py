"""clip_node: review clips of the events in doubt.

Keeps the last ``buffer_s`` seconds (by stamp) of every camera's
/jwo/cameras/<id>/image/compressed in memory (jwo_nodes.core.clips.FrameRing). For each
DoubtfulEvent of a /jwo/review/requests message it writes, per camera in its
``camera_ids``, the frames of [window_start - margin_s, window_end + margin_s] as the
H.264 MP4 ``<clip_root>/<clip_ref>`` that uplink_node sends to the cloud, the frames of
the event's own window marked. Only flagged visits get clips. Clips are written by a
worker thread, so frames keep flowing.
"""
import os
import queue
import threading
import time
from dataclasses import dataclass

from jwo.msg import ReviewRequest
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage

from jwo_nodes.core.clips import EventWindow, FrameRing, is_clip_ref, write_clip
from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.ros_common import (DURABLE_EVENT_QOS, REQUIRED, SENSOR_QOS, Counters, Param,
                                  declare_params, run_node, to_ns)

PARAMS = [
    Param('store_config', str, 'Path of the store YAML (config/stores/<store>.yaml).', REQUIRED),
    Param('clip_root', str, "Directory the clips are written under (the uplink's clip_root).",
          REQUIRED),
    Param('buffer_s', float, 'Seconds of frames (by stamp) kept per camera; must cover the '
          'longest visit, since a review request comes at the exit.', 600.0, 1.0, 86400.0),
    Param('margin_s', float, 'Seconds of video before and after the window of an event.',
          3.0, 0.0, 60.0),
    Param('wait_s', float, "Longest wall time a clip waits for its camera's frames to pass "
          "the window's end.", 10.0, 0.0, 300.0),
]

COUNTERS = ('frames', 'review_requests', 'clips_written', 'clips_present', 'clips_missing',
            'clips_truncated', 'clip_errors', 'unknown_camera', 'malformed_review_request')


@dataclass(frozen=True)
class _Job:
    camera_id: str
    path: str
    event: EventWindow
    t0_ns: int        # the event's window and the margins around it
    t1_ns: int
    deadline: float   # time.monotonic()


class ClipNode(Node):

    def __init__(self, **node_options):
        super().__init__('clip_node', **node_options)
        self._stop = threading.Event()
        self._jobs = queue.SimpleQueue()
        # The writer's outcomes (counter, message or None), counted on the executor thread.
        self._outcomes = queue.SimpleQueue()
        self._writer = None
        self.params = p = declare_params(self, PARAMS)
        if not p.clip_root:
            raise ConfigError(f'node {self.get_fully_qualified_name()}', 'clip_root',
                              'must name a directory')
        self.store = load_store_config(p.store_config)
        self.counters = Counters(self, f'clips/{self.store.store_id}', COUNTERS)
        # Rings are filled on the executor thread and read by the writer thread.
        self._lock = threading.Lock()
        self._rings = {camera_id: FrameRing(p.buffer_s) for camera_id in self.store.cameras}
        for camera_id in self.store.cameras:
            self.create_subscription(
                CompressedImage, f'cameras/{camera_id}/image/compressed',
                lambda msg, camera_id=camera_id: self._on_frame(camera_id, msg), SENSOR_QOS)
        # Durable like fusion publishes it: requests issued while this node restarted
        # still arrive (their clips already on disk are left alone).
        self.create_subscription(ReviewRequest, 'review/requests', self._on_review,
                                 DURABLE_EVENT_QOS)
        self.create_timer(0.2, self._count_outcomes)
        self._writer = threading.Thread(target=self._write_loop, name='jwo-clips', daemon=True)
        self._writer.start()
        self.get_logger().info(
            f'clips of {len(self._rings)} cameras ({p.buffer_s:g} s kept, +/- {p.margin_s:g} s '
            f'per event) under {p.clip_root}')

    def _on_frame(self, camera_id: str, msg: CompressedImage) -> None:
        with self._lock:
            self._rings[camera_id].add(to_ns(msg.header.stamp), bytes(msg.data))
        self.counters.count('frames')

    def _on_review(self, msg: ReviewRequest) -> None:
        self.counters.count('review_requests')
        margin_ns = int(self.params.margin_s * 1e9)
        deadline = time.monotonic() + self.params.wait_s
        for event in msg.events:
            if len(event.clip_refs) != len(event.camera_ids):
                self.counters.warn('malformed_review_request',
                                   f'{msg.receipt_id} {event.event_id}: {len(event.camera_ids)} '
                                   f'cameras, {len(event.clip_refs)} clip refs')
                continue
            for camera_id, ref in zip(event.camera_ids, event.clip_refs):
                if camera_id not in self._rings:
                    self.counters.warn('unknown_camera', f'{msg.receipt_id} {event.event_id}: '
                                       f'{camera_id!r} is not in the store config')
                elif not is_clip_ref(ref):
                    self.counters.warn('malformed_review_request',
                                       f'{msg.receipt_id} {event.event_id}: clip ref {ref!r}')
                else:
                    window = EventWindow(to_ns(event.window_start), to_ns(event.window_end))
                    self._jobs.put(_Job(camera_id, os.path.join(self.params.clip_root, ref),
                                        window, window.start_ns - margin_ns,
                                        window.end_ns + margin_ns, deadline))

    # -- writer thread -------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                outcomes = self._write(job)
            except Exception as error:   # noqa: BLE001 - one clip must not end the writer
                outcomes = [('clip_errors', f'{job.path}: {error}')]
            for outcome in outcomes:
                self._outcomes.put(outcome)

    def _write(self, job: _Job) -> list:
        if os.path.exists(job.path):
            return [('clips_present', None)]
        # The request comes at the exit; the frames after the event may still be on
        # their way.
        while not self._stop.is_set() and time.monotonic() < job.deadline:
            with self._lock:
                newest = self._rings[job.camera_id].newest_ns
            if newest is not None and newest >= job.t1_ns:
                break
            self._stop.wait(0.1)
        if self._stop.is_set():
            return [('clip_errors', f'{job.path}: not written, shutting down')]
        with self._lock:
            ring = self._rings[job.camera_id]
            frames = ring.frames_between(job.t0_ns, job.t1_ns)
            truncated = ring.dropped_from(job.t0_ns)
        window = f'{job.camera_id} [{job.t0_ns / 1e9:.3f}, {job.t1_ns / 1e9:.3f}]'
        if not frames:
            return [('clips_missing', f'{job.path}: no frames of {window}'
                     + (' left in the ring' if truncated else ''))]
        written = write_clip(job.path, frames, job.event, self.store.cameras[job.camera_id].fps)
        if truncated:
            return [('clips_written', None),
                    ('clips_truncated', f'{job.path}: {written} frames; the start of {window} '
                     'had left the ring')]
        return [('clips_written', None)]

    def _count_outcomes(self) -> None:
        while True:
            try:
                name, message = self._outcomes.get_nowait()
            except queue.Empty:
                return
            if message is None:
                self.counters.count(name)
            else:
                self.counters.warn(name, message)

    def destroy_node(self):
        # Also called by rclpy's shutdown for a node whose __init__ failed half-way.
        self._stop.set()
        if self._writer is not None:
            self._jobs.put(None)
            self._writer.join(timeout=10.0)
        return super().destroy_node()


def main(args=None):
    run_node(ClipNode, args)


if __name__ == '__main__':
    main()
