"""vision_tracker_node: shoppers tracked on camera frames (namespace /jwo).

Subscribes to every camera's ``cameras/<id>/image/compressed`` and every gate's
``gates/<id>/events``; groups the frames of one time step across cameras, runs the
detector (ONNX Runtime) on them as one batch, projects the shoppers' floor points and
hands through each camera's homography, tracks them on the floor and publishes
``shoppers/positions`` stamped with the frames' stamp, each track with its hand when
one was seen: the seam fusion reads, which the simulator's shopper_sim_node fills
without cameras (and without hands).

Inference and tracking run on a thread of their own, fed a queue of time steps: the
executor only batches frames and takes gate events, so a slow batch delays neither the
next frames nor, in a container, the other nodes.
"""
import queue
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
from jwo.msg import GateEvent, ShopperPosition, ShopperPositions
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CompressedImage

from jwo_nodes.core.appearance import AppearanceSampler, AppearanceSettings
from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.core.detector import Detector, DetectorSettings, default_model_path
from jwo_nodes.core.held_item import HeldItemReader, default_model_path as held_item_model
from jwo_nodes.core.perception import HandParallax, floor_detections
from jwo_nodes.core.tracker import FrameBatcher, Tracker, TrackerSettings, hand_per_track
from jwo_nodes.ros_common import (DURABLE_EVENT_QOS, EVENT_QOS, REQUIRED, SENSOR_QOS, Counters,
                                  Param, declare_params, run_node, to_ns, to_stamp)

PARAMS = [
    Param('store_config', str, 'Path of the store YAML (config/stores/<store>.yaml).', REQUIRED),
    Param('model_path', str, 'Detector ONNX file (jwo heatmap model or a YOLO export); empty: '
          'models/detector.onnx of the package.', ''),
    Param('held_item_model_path', str, 'Held-item reader ONNX (what a hand holds); empty: '
          "models/held_item.onnx of the package; 'none': do not read.", ''),
    Param('input_width', int, 'Model input width (pixels) when the model does not fix it.', 256, 32, 4096),
    Param('input_height', int, 'Model input height (pixels) when the model does not fix it.', 192, 32, 4096),
    Param('shopper_threshold', float, 'Minimum score of a shopper detection.', 0.35, 0.01, 0.99),
    Param('hand_threshold', float, 'Minimum score of a hand detection.', 0.35, 0.01, 0.99),
    Param('nms_iou', float, 'YOLO models: boxes overlapping more than this are one.', 0.5, 0.05, 0.95),
    Param('threads', int, 'ONNX Runtime threads per run (0: its default).', 0, 0, 64),
    Param('frame_queue', int, 'Frames kept per camera, and time steps waiting for inference: a '
          'tracker busy for a moment catches up on them instead of losing them (beyond it the oldest '
          'time step is dropped, counted as dropped_batches).', 50, 1, 1000),
    Param('batch_tolerance_s', float, 'Frames of different cameras stamped within this are one '
          'time step.', 0.05, 0.0, 1.0),
    Param('batch_wait_s', float, 'Wall seconds a time step waits for a silent camera before it '
          'is processed without it.', 0.3, 0.01, 5.0),
    Param('merge_radius_m', float, 'Detections of two cameras this close are one shopper (m).', 0.5, 0.05, 3.0),
    Param('match_radius_m', float, 'A detection this far from a track prediction is not its (m).', 1.0, 0.1, 5.0),
    Param('confirm_hits', int, 'Detections before a new track is published.', 2, 1, 20),
    Param('coast_publish_s', float, 'A track without detections is published this long (s).', 1.0, 0.0, 10.0),
    Param('keep_lost_s', float, 'A lost track can be re-acquired this long (s).', 120.0, 0.0, 3600.0),
    Param('gate_margin_m', float, 'A track starting within gate radius + this started at the gate (m).',
          0.6, 0.0, 5.0),
    Param('arm_reach_m', float, 'A hand belongs to the nearest track within this (m).', 1.1, 0.1, 3.0),
    Param('torso_lean', float, "Shoulders appear displaced from the feet, away from the point under "
          "the camera, by this share of the feet's distance from it: shoulder height / (camera height - "
          "shoulder height, shoulders taken as 1.3 m up). Where the clothing colour is sampled, and how far "
          "a hand at a shelf appears displaced the same way (placed back over the floor).", 0.1, 0.0, 2.0),
    Param('appearance_weight_m', float, 'A clothing colour difference (0 same .. 1 unlike) counts as '
          'this many metres when matching detections to tracks (0: position only).', 1.0, 0.0, 5.0),
]

@dataclass(frozen=True)
class _TimeStep:
    """One time step's decoded frames, waiting for the inference thread."""
    stamp_ns: int
    cameras: list
    frames: list


COUNTERS = ('frames', 'batches', 'partial_batches', 'bad_frames', 'late_frames', 'dropped_batches',
            'inference_ms_total', 'entries', 'exits')


class VisionTrackerNode(Node):
    def __init__(self, **node_options):
        super().__init__('vision_tracker_node', **node_options)
        p = self.params = declare_params(self, PARAMS)
        where = f'node {self.get_fully_qualified_name()}'
        self.store = load_store_config(p.store_config)
        if not self.store.cameras:
            raise ConfigError(p.store_config, 'cameras', 'the vision tracker needs at least one camera')
        model = p.model_path or default_model_path()
        if not model:
            raise ConfigError(where, 'model_path', 'no models/detector.onnx found; give model_path')
        try:
            self.detector = Detector(DetectorSettings(
                model_path=model, input_width=p.input_width, input_height=p.input_height,
                shopper_threshold=p.shopper_threshold, hand_threshold=p.hand_threshold,
                nms_iou=p.nms_iou, threads=p.threads))
        except (FileNotFoundError, ValueError) as error:
            raise ConfigError(where, 'model_path', str(error))
        except Exception as error:  # noqa: BLE001 - onnxruntime's own errors
            raise ConfigError(where, 'model_path', f'cannot load {model}: {type(error).__name__}: {error}')
        if self.detector.provider_note:
            self.get_logger().info(self.detector.provider_note)
        self.reader = self._held_item_reader(where)
        self.tracker = Tracker(
            list(self.store.gates.values()),
            TrackerSettings(merge_radius_m=p.merge_radius_m, match_radius_m=p.match_radius_m,
                            confirm_hits=p.confirm_hits, coast_publish_s=p.coast_publish_s,
                            keep_lost_s=p.keep_lost_s, gate_margin_m=p.gate_margin_m,
                            arm_reach_m=p.arm_reach_m, appearance_weight_m=p.appearance_weight_m))
        look = AppearanceSettings(torso_lean=p.torso_lean)
        self.samplers = {c.id: AppearanceSampler(c, look) for c in self.store.cameras.values()}
        self.parallaxes = {c.id: HandParallax(self.store, c, p.torso_lean) for c in self.store.cameras.values()}
        self.batcher = FrameBatcher(self.store.cameras, int(p.batch_tolerance_s * 1e9))
        self._pending_since = None
        # The tracker is fed by the inference thread (steps) and the executor (gate events).
        self._tracker_lock = threading.Lock()
        self._steps = queue.Queue(maxsize=p.frame_queue)
        self._failure = None
        self._tracker_counts = {}
        self._worker = threading.Thread(target=self._infer, name='vision_inference', daemon=True)
        self.counters = Counters(self, 'vision_tracker', COUNTERS + tuple(self.tracker.counters))
        self.publisher = self.create_publisher(ShopperPositions, 'shoppers/positions', EVENT_QOS)
        frames_qos = QoSProfile(history=SENSOR_QOS.history, depth=p.frame_queue,
                                reliability=SENSOR_QOS.reliability, durability=SENSOR_QOS.durability)
        for camera_id in self.store.cameras:
            self.create_subscription(CompressedImage, f'cameras/{camera_id}/image/compressed',
                                     lambda msg, c=camera_id: self._on_frame(c, msg), frames_qos)
        for gate_id in self.store.gates:
            self.create_subscription(GateEvent, f'gates/{gate_id}/events', self._on_gate, DURABLE_EVENT_QOS)
        self.create_timer(0.05, self._on_timer)
        self._worker.start()
        self.get_logger().info(
            f'detector {model}: {self.detector.format}, input {self.detector.input_width}x'
            f'{self.detector.input_height}, {self.detector.provider}; cameras '
            f'{", ".join(self.store.cameras)}')

    def _on_gate(self, msg: GateEvent) -> None:
        if msg.gate_id not in self.store.gates:
            self.counters.warn('bad_gate_events', f'{msg.event_id}: unknown gate {msg.gate_id!r}')
            return
        if msg.direction != GateEvent.ENTRY:
            # A walk-out has no visit code: the tracker takes the coded track at the gate.
            self.counters.count('exits')
            with self._tracker_lock:
                self.tracker.add_exit(msg.gate_id, to_ns(msg.header.stamp), msg.visit_code)
            return
        if not msg.visit_code:
            self.counters.warn('bad_gate_events', f'{msg.event_id}: ENTRY without a visit code')
            return
        self.counters.count('entries')
        with self._tracker_lock:
            self.tracker.add_entry(msg.gate_id, to_ns(msg.header.stamp), msg.visit_code, max(1, msg.group_size))

    def _on_frame(self, camera_id: str, msg: CompressedImage) -> None:
        self.counters.count('frames')
        stamp = to_ns(msg.header.stamp)
        ready = self.batcher.add(camera_id, stamp, msg)
        if ready is None:
            self.counters.warn('late_frames', f'{camera_id}: frame stamped {stamp} after its time step was processed')
            return
        if self._pending_since is None and self.batcher.pending:
            self._pending_since = time.monotonic()
        for batch in ready:
            self._hand_over(batch)

    def _on_timer(self) -> None:
        if self._failure is not None:
            raise self._failure     # in the executor: the node fails as if the callback had
        # The tracker's counters, copied here: /diagnostics is published from this thread.
        self.counters.values.update(self._tracker_counts)
        if self._pending_since is not None and time.monotonic() - self._pending_since > self.params.batch_wait_s:
            batch = self.batcher.flush()
            if batch:
                self._hand_over(batch)

    def _hand_over(self, batch) -> None:
        """Decodes a time step's frames and queues them for the inference thread; when it
        is that far behind, the oldest waiting step goes (like a frame a camera dropped)."""
        self._pending_since = time.monotonic() if self.batcher.pending else None
        stamp_ns, messages = batch
        cameras, frames = [], []
        for camera_id, msg in messages.items():
            frame = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
            camera = self.store.cameras[camera_id]
            if frame is None or frame.ndim != 3:
                self.counters.warn('bad_frames', f'{camera_id}: not a decodable image ({msg.format!r})')
                continue
            if (frame.shape[1], frame.shape[0]) != (camera.width, camera.height):
                frame = cv2.resize(frame, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
            cameras.append(camera)
            frames.append(frame)
        if not frames:
            return
        if len(frames) < len(self.store.cameras):
            self.counters.count('partial_batches')
        step = _TimeStep(stamp_ns, cameras, frames)
        while True:
            try:
                self._steps.put_nowait(step)
                return
            except queue.Full:
                try:
                    dropped = self._steps.get_nowait()
                    self.counters.warn('dropped_batches', f'inference {self._steps.maxsize} time steps behind: '
                                       f'the one stamped {dropped.stamp_ns} is dropped')
                except queue.Empty:
                    pass

    def _infer(self) -> None:
        """The inference thread: one queued time step after the other."""
        while True:
            step = self._steps.get()
            if step is None:
                return
            try:
                self._track(step)
            except Exception as error:  # noqa: BLE001 - raised again in the executor
                self._failure = error
                return

    def _held_item_reader(self, where: str):
        """The held-item reader of held_item_model_path; None for 'none', or where the
        package ships no model and none was given."""
        path = self.params.held_item_model_path
        if path == 'none':
            return None
        path = path or held_item_model()
        if not path:
            self.get_logger().warning('no models/held_item.onnx: hands are published without what they hold')
            return None
        try:
            return HeldItemReader(path, self.params.threads)
        except FileNotFoundError as error:
            raise ConfigError(where, 'held_item_model_path', str(error))
        except Exception as error:  # noqa: BLE001 - onnxruntime's own errors
            raise ConfigError(where, 'held_item_model_path', f'cannot load {path}: {type(error).__name__}: {error}')

    def _track(self, step: _TimeStep) -> None:
        stamp_ns, cameras, frames = step.stamp_ns, step.cameras, step.frames
        started = time.perf_counter()
        results = self.detector.detect(frames)
        self.counters.count('inference_ms_total', int(round((time.perf_counter() - started) * 1000)))
        shoppers, hands = floor_detections(cameras, frames, results, self.samplers, self.reader,
                                           self.parallaxes)
        with self._tracker_lock:
            tracks, given = self.tracker.step(stamp_ns, shoppers, hands)
            self._tracker_counts = dict(self.tracker.counters)
        self.counters.count('batches')
        msg = ShopperPositions()
        msg.header.stamp = to_stamp(stamp_ns)
        msg.header.frame_id = 'floor'
        # The message holds one hand per track.
        hand_of = hand_per_track(given, self.tracker.settings.same_hand_m)
        msg.shoppers = []
        for t in tracks:
            hand = hand_of.get(t.track_id)
            msg.shoppers.append(ShopperPosition(
                track_id=t.track_id, visit_code=t.visit_code, x=t.x, y=t.y,
                confidence=float(t.confidence), hand_seen=hand is not None,
                hand_x=hand.x if hand else 0.0, hand_y=hand.y if hand else 0.0))
            if hand is not None and hand.item is not None:
                shopper = msg.shoppers[-1]
                shopper.hand_holding, shopper.hand_item_blue, shopper.hand_item_green = (
                    hand.item.holding, hand.item.blue, hand.item.green)
        self.publisher.publish(msg)

    def destroy_node(self):
        # The steps already queued are processed first; a thread that failed takes none.
        while self._worker.is_alive():
            try:
                self._steps.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        if self._worker.ident is not None:
            self._worker.join()
        return super().destroy_node()


def main(args=None):
    run_node(VisionTrackerNode, args)


if __name__ == '__main__':
    main()
