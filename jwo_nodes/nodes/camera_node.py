"""camera_node: one camera. Grabs frames from an OpenCV source (device, video file,
rtsp:// stream) or renders the simulated store, and publishes them as JPEG
sensor_msgs/CompressedImage on /jwo/cameras/<camera_id>/image/compressed.

In sim mode (jwo_nodes.core.render) the frames are taken on a grid of scenario time,
frame k at ``k / fps`` scenario seconds, so every simulated camera stamps the frames of
one instant alike and the tracker sees the camera's frame rate in scenario time at any
time_scale (at 4x a 10 fps camera renders 40 frames per wall second); a frame whose
turn has passed while rendering is skipped (counted), and frames the scenario drops
are not published."""
import array
import threading
import time

from rclpy.node import Node
from sensor_msgs.msg import CompressedImage

from jwo_nodes.core import frame_source
from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.ros_common import (SENSOR_QOS, Counters, Param, SimStart, declare_params, run_node,
                                  to_stamp)

PARAMS = [
    Param('store_config', str, 'store configuration YAML file'),
    Param('camera_id', str, 'id of this camera in the store configuration'),
    Param('source', str, "overrides the camera's source in the store config: 'sim', a "
          "device index ('0'), a video file or an rtsp:// URL; empty: from the config", ''),
    Param('jpeg_quality', int, 'JPEG quality of the published frames', frame_source.JPEG_QUALITY, 1, 100,
          dynamic=True),
    Param('fps', float, "frames per second; 0: the camera's fps from the store config",
          0.0, 0.0, 120.0),
    Param('loop', bool, 'video file source: start again at its end (false: stop '
          'publishing)', True),
    Param('scenario', str, "scenario YAML file (source 'sim')", ''),
    Param(SimStart.PARAM, int, SimStart.DESCRIPTION, 0, 0),
    Param('time_scale', float, "scenario seconds per wall second (source 'sim')",
          1.0, 0.001, 1000.0),
    Param('sim_noise_sigma', float, "sensor noise of rendered frames, grey levels (source 'sim')",
          4.0, 0.0, 50.0),
    Param('sim_drop_rate', float, "share of rendered frames lost, at least the scenario's "
          "dropped_messages (source 'sim')", 0.0, 0.0, 1.0),
]

COUNTER_NAMES = ('frames', 'grab_failed', 'frames_dropped', 'reconnects', 'encode_failed')
# No frame for this long (or for ten frame periods, when longer) and the camera's status
# is STALE.
SILENT_S = 5.0


class CameraNode(Node):

    def __init__(self, **node_options):
        super().__init__('camera_node', **node_options)
        self._stop = threading.Event()
        self._thread = None
        self._source = None
        self.params = p = declare_params(self, PARAMS)
        where = f'node {self.get_fully_qualified_name()}'
        self.store = load_store_config(p.store_config)
        if p.camera_id not in self.store.cameras:
            raise ConfigError(p.store_config, 'cameras',
                              f'no camera {p.camera_id!r} (camera_id parameter of {where}); '
                              f'known: {", ".join(sorted(self.store.cameras)) or "none"}')
        self.camera = self.store.cameras[p.camera_id]
        self.source_name = (p.source or self.camera.source).strip()
        self.fps = p.fps or self.camera.fps
        self.counters = Counters(self, f'camera/{self.camera.id}', COUNTER_NAMES)
        wall_fps = self.fps * (p.time_scale if self.source_name == 'sim' else 1.0)
        self.counters.expect('frames', max(SILENT_S, 10 / wall_fps))
        self._pending = {}
        self._pending_warnings = []
        self._lock = threading.Lock()
        if self.source_name == 'sim':
            if not p.scenario:
                raise ConfigError(where, 'scenario', "required with source 'sim'")
            # The simulator and renderer are only needed in sim mode.
            from jwo_nodes.core import render, sim
            self._timeline = sim.Timeline(sim.load_scenario(p.scenario, self.store), self.store)
            self._sim_module = sim
            self._sim_start = SimStart(self, p.sim_start_ns)
            self._sim_clock = None    # once scenario time 0 is known
            self._sim_next = 0
            self._figures = render.SceneFigures(self._timeline)
            noise = self._timeline.scenario.noise
            self._renderer = render.CameraRenderer(self.store, self.camera, render.RenderSettings(
                seed=self._timeline.scenario.seed, noise_sigma=p.sim_noise_sigma,
                drop_rate=max(p.sim_drop_rate, noise.dropped_messages)))
        else:
            try:
                self._source = frame_source.FrameSource(
                    self.source_name, loop=p.loop, size=(self.camera.width, self.camera.height))
            except frame_source.FrameSourceError as error:
                raise ConfigError(where if p.source else p.store_config,
                                  'source' if p.source else f'cameras.{self.camera.id}.source',
                                  str(error))
        topic = ('image/compressed' if self.get_namespace() != '/'
                 else f'/jwo/cameras/{self.camera.id}/image/compressed')
        self.publisher = self.create_publisher(CompressedImage, topic, SENSOR_QOS)
        self.create_timer(0.2, self._flush_counts)
        # Grabbing may block (a stream reconnecting), so it runs beside the executor.
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.get_logger().info(f'camera {self.camera.id}: {frame_source.redact(self.source_name)} '
                               f'at {self.fps:g} fps on {self.publisher.topic_name}')

    # -- capture thread ----------------------------------------------------------------

    def _run(self) -> None:
        # Sim mode polls its frame grid four times a frame (a frame found late is
        # counted there); a real source is read once a frame.
        sim_mode = self._source is None
        period = 0.25 / (self.fps * self.params.time_scale) if sim_mode else 1.0 / self.fps
        next_due = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now < next_due:
                self._stop.wait(next_due - now)
                continue
            behind = int((now - next_due) / period)
            if behind and not sim_mode:
                self._count('frames_dropped', behind)
            next_due += behind * period
            next_due += period
            try:
                if not self._capture_once():
                    return
            except Exception as error:  # noqa: BLE001 - a frame must not end the camera
                if self._stop.is_set():
                    return
                self._warn('grab_failed', f'{type(error).__name__}: {error}')

    def _capture_once(self) -> bool:
        """Grabs, encodes and publishes one frame; False when the source has ended."""
        if self._source is None:
            if self._sim_clock is None:
                if self._sim_start.ns is None:
                    time.sleep(0.01)    # the capture thread waits for scenario time 0
                    return True
                self._sim_clock = self._sim_module.SimClock(self._sim_start.ns, self.params.time_scale)
            due = self._sim_clock.due(self.fps, self._sim_next,
                                      self.get_clock().now().nanoseconds)
            if not due:
                return True
            k = due[-1]
            if len(due) > 1:
                self._count('frames_dropped', len(due) - 1)
            self._sim_next = k + 1
            if self._renderer.dropped(k):
                self._count('frames_dropped_by_scenario')
                return True
            t_ns = int(round(k * 1e9 / self.fps))
            frame = self._renderer.render(self._figures.at(t_ns), t_ns / 1e9, k).image
            stamp_ns = self._sim_clock.stamp_ns(t_ns)
        else:
            source = self._source
            reconnects, failed = source.reconnects, source.failed_grabs
            frame = source.read()
            stamp_ns = self.get_clock().now().nanoseconds
            if source.reconnects != reconnects:
                self._count('reconnects')
                self.get_logger().info(f'{frame_source.redact(self.source_name)} reconnected')
            if frame is None:
                if source.finished:
                    self.get_logger().info(f'video {self.source_name} ended; no more frames')
                    return False
                if source.failed_grabs != failed:
                    name = frame_source.redact(self.source_name)
                    self._warn('grab_failed', f'no frame from {name}' + (
                        '' if source.connected else '; reconnecting with backoff'))
                else:  # disconnected, waiting to reconnect
                    self._count('frames_dropped')
                return True
        try:
            jpeg = frame_source.encode_jpeg(frame, self.params.jpeg_quality)
        except ValueError as error:
            self._warn('encode_failed', str(error))
            return True
        msg = CompressedImage(format='jpeg')
        msg.header.stamp = to_stamp(stamp_ns)
        msg.header.frame_id = self.camera.id
        data = array.array('B')
        data.frombytes(jpeg.tobytes())
        msg.data = data
        if self._stop.is_set():
            return False
        self.publisher.publish(msg)
        self._count('frames')
        return True

    # Counters belong to the executor thread: the capture thread hands counts over.
    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._pending[name] = self._pending.get(name, 0) + amount

    def _warn(self, name: str, message: str) -> None:
        with self._lock:
            self._pending_warnings.append((name, message))

    def _flush_counts(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            warnings, self._pending_warnings = self._pending_warnings, []
        for name, amount in pending.items():
            self.counters.count(name, amount)
        for name, message in warnings:
            self.counters.warn(name, message)

    def destroy_node(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3.0)
        if self._source is not None and (self._thread is None or not self._thread.is_alive()):
            self._source.close()
        return super().destroy_node()


def main(args=None):
    run_node(CameraNode, args)


if __name__ == '__main__':
    main()
