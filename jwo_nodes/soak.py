"""`jwo soak`: the store under steady traffic for a long wall time, watching every node
process's memory, CPU and drop counters. A benchmark, not a test: the verdict is
printed, never asserted (exit status 0 when it ran).

    jwo soak                                   # 30 min at twice the medium preset's traffic
    jwo soak --minutes 2 --load 2 --out /tmp/soak-try
    jwo soak --minutes 240 --load 3 --store config/stores/demo.yaml --sample-s 10

**Load.** One long scenario of the preset (default ``medium``) for the store, whose
parties enter ``load`` times as often: the preset's ``entry_gap_s`` (medium: 5-10 s)
divided by ``load``, with enough parties that entries continue past the end of the wall
time (``parties = ceil((minutes x 60 + 60) x load / mean gap) + 1``), so the traffic is
steady to the end. Everything else (party sizes, actions, put-backs, noise) is the
preset's. The nodes play it in real time (scenario seconds = wall seconds; stand-in
tracker, no cameras unless --cameras / --vision). The run stops at ``minutes`` after
scenario time 0, with shoppers still in the store.

**Stock.** A medium scenario takes a few hundred units off the demo store's shelves in
minutes, after which shoppers would walk out empty-handed and the load would collapse.
The soak therefore runs on a copy of the store config (``store.yaml`` in the run folder)
whose bins start with their configured units plus every unit the scenario takes from
them (nothing else changes), but no bin heavier than 500 kg (the weight detector
rejects samples beyond ``max_abs_g``, 1000 kg by default): a bin at that cap runs empty
in a very long soak (hours at load 2 on the demo store, printed at the start) and the
scenario, generated against that stock, takes no more from it.

**Samples.** Every ``--sample-s`` seconds, per node process (its pid from the
supervisor; this harness too, as ``(harness)``, not counted in the store's total):
resident memory (``/proc/<pid>/status`` VmRSS) and CPU % over the interval
(``/proc/<pid>/stat`` utime + stime; 100 % = one core), and the newest counters each node
published on ``/diagnostics`` (totals; the ``_recent`` ones are left out). Written as
they are taken, so an interrupted soak keeps its data:

* ``samples.csv``: time_s, node, pid, rss_mb, cpu_pct (time_s from scenario time 0);
* ``counters.csv``: time_s, node, counter, value;
* ``summary.json``: the inputs, the threshold rule, per node its memory
  (jwo_nodes.core.soak_stats.memory_summary), CPU, restarts, the growth of its watched
  counters (names holding drop, lost, late, stale, malformed, failed, unassigned) and
  the worst diagnostics level it reported; receipts against visits.

**Levelled off** (jwo_nodes.core.soak_stats): the least-squares slope of a node's RSS
over the second half of the run, its last process only, is under max(5 MB/h, 1 % of its
RSS per hour). A run whose second half is under 10 minutes says so: its slopes are
extrapolated from a short window.

Also in the run folder: ``scenario.yaml``, ``nodes.log`` (the nodes' output) and
``state/`` (what the nodes keep across restarts).
"""
import copy
import csv
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

from jwo_nodes.core import soak_stats
from jwo_nodes.core.config import ConfigError, load_store_config, parse_store_config
from jwo_nodes.core.scenario_gen import PRESETS, generate
from jwo_nodes.core.sim import NS, Timeline, load_scenario
from jwo_nodes.launcher import START_LEAD_S, add_shelves_per_process
from jwo_nodes.proc_usage import TICKS_PER_S, usage

DEFAULT_STORE = 'config/stores/demo.yaml'
HARNESS = '(harness)'
# Entries continue this long past the end of the wall time (no lull at the end).
ENTRY_MARGIN_S = 60.0
# A visit that exited at least this long before the end should have its receipt.
RECEIPT_SETTLE_S = 15.0
# A second half shorter than this gives a slope worth little.
SHORT_WINDOW_S = 600.0
# No bin starts heavier than this (the weight detector rejects samples beyond its
# max_abs_g, 1000 kg by default).
MAX_BIN_GRAMS = 500_000.0
_LEVEL_NAMES = {0: 'OK', 1: 'WARN', 2: 'ERROR', 3: 'STALE'}


def add_arguments(parser) -> None:
    add_shelves_per_process(parser)
    parser.add_argument('--minutes', type=float, default=30.0,
                        help='wall minutes of traffic, from scenario time 0 (default 30)')
    parser.add_argument('--load', type=float, default=2.0,
                        help="traffic as a multiple of the preset's: parties enter LOAD times as "
                             'often (default 2)')
    parser.add_argument('--store', default=DEFAULT_STORE, help=f'store config YAML (default {DEFAULT_STORE})')
    parser.add_argument('--preset', default='medium', choices=sorted(PRESETS),
                        help='scenario preset whose traffic is scaled (default medium)')
    parser.add_argument('--seed', type=int, default=0, help='scenario seed (default 0)')
    parser.add_argument('--sample-s', type=float, default=5.0,
                        help='seconds between samples (default 5)')
    parser.add_argument('--cameras', action='store_true', help='also run the camera nodes')
    parser.add_argument('--vision', action='store_true',
                        help='track shoppers on rendered camera frames (vision_tracker_node) instead of '
                             'the stand-in tracker (runs the cameras)')
    parser.add_argument('--start-delay', type=float, default=START_LEAD_S,
                        help='wall seconds from the graph being ready to scenario time 0')
    parser.add_argument('--runs-dir', default='runs', help='where the run folder is created')
    parser.add_argument('--out', help='run folder (default: <runs-dir>/soak-<date>)')


# ---------------------------------------------------------------- the inputs

def _steps(party: dict):
    for script in ([party['script']] if 'script' in party else party['scripts']):
        for step in script:
            if isinstance(step, dict):
                yield step


def _units_taken(scenario: dict) -> Counter:
    taken = Counter()
    for party in scenario['parties']:
        for step in _steps(party):
            if 'take' in step:
                taken[step['take']['bin']] += int(step['take']['n'])
    return taken


def _restocked(raw: dict, units: dict) -> dict:
    document = copy.deepcopy(raw)
    for shelf in document['shelves']:
        for bin_ in shelf['bins']:
            bin_['initial_units'] = units[bin_['id']]
    return document


def soak_inputs(store_path: str, preset: str, seed: int, load: float, seconds: float) -> tuple:
    """(store document, scenario document, facts): the preset's scenario with entries
    ``load`` times as frequent, spanning ``seconds`` + ENTRY_MARGIN_S, and a copy of the
    store whose bins hold their units plus all the scenario takes from them, up to
    MAX_BIN_GRAMS (a bin capped so runs empty late in a very long soak, and the scenario
    is generated against that stock: its takes of the bin stop). Raises ConfigError for
    a bad store config."""
    store = load_store_config(store_path)     # validates, names the file on error
    raw = yaml.safe_load(Path(store_path).read_text())
    p = PRESETS[preset]
    gap = (p.entry_gap_s[0] / load, p.entry_gap_s[1] / load)
    parties = soak_stats.parties_for(load, seconds + ENTRY_MARGIN_S, sum(p.entry_gap_s) / 2)
    original = {b.id: b.initial_units for b in store.bins.values()}

    def scenario_for(units: dict) -> dict:
        return generate(parse_store_config(_restocked(raw, units), store_path), preset, seed,
                        parties=parties, entry_gap_s=gap)

    # Generated against bottomless bins, so that no take is cut short by stock ...
    taken = _units_taken(scenario_for({b: 10 ** 6 for b in original}))
    # ... then each bin stocked with what it has plus what is taken from it, within the cap.
    units, capped = {}, []
    for bin_id, have in original.items():
        unit_grams = store.products[store.bin(bin_id).sku].unit_grams
        cap = max(have, int(MAX_BIN_GRAMS // unit_grams))
        units[bin_id] = min(have + taken[bin_id], cap)
        if have + taken[bin_id] > cap:
            capped.append(bin_id)
    scenario = scenario_for(units)
    scenario['name'] = f'soak-{preset}-{seed}-x{load:g}'
    grams, heaviest = max((units[b] * store.products[store.bin(b).sku].unit_grams, b) for b in units)
    facts = {'preset': preset, 'seed': seed, 'load': load,
             'preset_entry_gap_s': list(p.entry_gap_s), 'entry_gap_s': [round(g, 3) for g in gap],
             'parties': parties, 'units_taken': sum(_units_taken(scenario).values()),
             'bins_capped': sorted(capped),
             'heaviest_bin': {'id': heaviest, 'start_grams': round(grams, 1)}}
    return _restocked(raw, units), scenario, facts


# ---------------------------------------------------------------- the sampler

class WallTimeUp(Exception):
    """Raised from on_turn at the end of the wall time: run_scenario stops the node set
    (its finally) and lets it through."""


class Sampler:
    """Called every turn of the runner's loop (on_turn): spins its own executor for
    the /diagnostics subscriber, samples the node processes every ``sample_s``, prints
    progress each minute and ends the run at ``seconds`` after scenario time 0."""

    def __init__(self, out: Path, seconds: float, sample_s: float, receipts: dict):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor

        from jwo_nodes.ros_common import EVENT_QOS
        self.seconds, self.sample_s = seconds, sample_s
        self.receipts = receipts
        self.node = rclpy.create_node('soak_watch', namespace='/jwo')
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.diag = {}            # node fqn -> {counter: value}, newest
        self.worst_level = {}     # node fqn -> worst level seen
        self.not_ok = Counter()   # node fqn -> statuses seen that were not OK
        self._arrived = 0
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, EVENT_QOS)
        self.series = {}          # node -> [(time_s, pid, rss_mb, cpu_pct)]
        self.counters = {}        # (node, counter) -> [(time_s, value)]
        self._last = {}           # node -> (pid, ticks, monotonic s)
        self.processes = {}       # process label -> the fqns of its nodes
        self.starts = {}
        self.start_ns = None
        self.next_sample_ns = None
        self.next_progress_min = 1
        self.ended_at_s = None
        self._samples_file = open(out / 'samples.csv', 'w', newline='')
        self._counters_file = open(out / 'counters.csv', 'w', newline='')
        self._samples = csv.writer(self._samples_file)
        self._counter_rows = csv.writer(self._counters_file)
        self._samples.writerow(['time_s', 'node', 'pid', 'rss_mb', 'cpu_pct'])
        self._counter_rows.writerow(['time_s', 'node', 'counter', 'value'])

    def _on_diagnostics(self, msg) -> None:
        self._arrived += 1
        for status in msg.status:
            values = {}
            for kv in status.values:
                if kv.key.endswith('_recent'):
                    continue
                try:
                    values[kv.key] = float(kv.value)
                except ValueError:
                    continue
            self.diag.setdefault(status.name, {}).update(values)
            level = status.level if isinstance(status.level, int) else ord(status.level)
            self.worst_level[status.name] = max(self.worst_level.get(status.name, 0), level)
            if level:
                self.not_ok[status.name] += 1

    def spin(self) -> None:
        """Takes every diagnostics message waiting."""
        from jwo_nodes.ros_common import spin_arrived
        spin_arrived(self.executor, lambda: self._arrived, limit=200)

    def __call__(self, supervisor, start_ns) -> None:
        self.spin()
        if not self.processes:
            self.processes = {spec.label: spec.node_fqns for spec in supervisor.specs}
        self.starts = supervisor.starts()
        if start_ns is None:
            return
        now = time.time_ns()
        if self.start_ns is None:
            self.start_ns = start_ns
            self.next_sample_ns = now
        t_s = (now - start_ns) / NS
        done = t_s >= self.seconds
        if now >= self.next_sample_ns or done:
            self.sample(supervisor, t_s)
            self.next_sample_ns = now + int(self.sample_s * NS)
        if t_s >= self.next_progress_min * 60 and not done:
            self.progress(t_s)
            self.next_progress_min = int(t_s // 60) + 1
        if done:
            self.ended_at_s = round(t_s, 2)   # as the last sample's time
            raise WallTimeUp()

    def sample(self, supervisor, t_s: float) -> None:
        t = round(t_s, 2)
        pids = [(label, supervisor.pid(fqns[0])) for label, fqns in self.processes.items()]
        pids.append((HARNESS, os.getpid()))
        for name, pid in pids:
            rss_mb = cpu = None
            if pid is not None:
                rss_mb, ticks = usage(pid)
                now_s = time.monotonic()
                last = self._last.get(name)
                if last is not None and last[0] == pid:
                    cpu = soak_stats.cpu_percent(last[1], ticks, now_s - last[2], TICKS_PER_S)
                if ticks is not None:
                    self._last[name] = (pid, ticks, now_s)
            self.series.setdefault(name, []).append((t, pid, rss_mb, cpu))
            self._samples.writerow([t, name, '' if pid is None else pid,
                                    '' if rss_mb is None else f'{rss_mb:.2f}',
                                    '' if cpu is None else f'{cpu:.1f}'])
        for name in sorted(self.diag):
            for counter, value in sorted(self.diag[name].items()):
                self.counters.setdefault((name, counter), []).append((t, value))
                self._counter_rows.writerow([t, name, counter, f'{value:g}'])
        self._samples_file.flush()
        self._counters_file.flush()

    def store_rss_mb(self) -> float:
        return sum(rows[-1][2] or 0.0 for name, rows in self.series.items() if name != HARNESS and rows)

    def progress(self, t_s: float) -> None:
        cpu = sum(rows[-1][3] or 0.0 for name, rows in self.series.items() if name != HARNESS and rows)
        print(f'[soak] {t_s / 60:5.1f} min: {len(self.receipts)} receipts, store RSS '
              f'{self.store_rss_mb():.0f} MB, CPU {cpu:.0f} %', flush=True)

    def close(self) -> None:
        self._samples_file.close()
        self._counters_file.close()
        self.executor.remove_node(self.node)
        self.node.destroy_node()


# ---------------------------------------------------------------- the summary

def summarise(sampler: Sampler, t_end: float, timeline: Timeline, receipts: dict,
              latencies: list) -> dict:
    from jwo_nodes.core.scoring import percentiles
    nodes = {}
    for name, fqns in [*sampler.processes.items(), (HARNESS, ())]:
        rows = sampler.series.get(name, [])
        memory = soak_stats.memory_summary([(t, pid, rss) for t, pid, rss, _ in rows], t_end)
        started = sampler.starts.get(fqns[0]) if fqns else None
        if started:   # the supervisor's count also sees a restart between two samples
            memory['restarts'] = max(memory['restarts'], started - 1)
        watched = {}
        for (node, counter), values in sorted(sampler.counters.items()):
            if node in fqns and soak_stats.is_watched(counter):
                series = [v for _, v in values]
                # A container's counters are named by node: its shelves count the same things.
                key = counter if len(fqns) == 1 else f'{node} {counter}'
                watched[key] = {'first': series[0], 'last': series[-1],
                                'growth': soak_stats.counter_growth(series)}
        worst = max((sampler.worst_level[f] for f in fqns if f in sampler.worst_level), default=None)
        nodes[name] = {**memory,
                       'nodes': len(fqns),
                       'cpu_mean_pct': soak_stats.mean(c for t, _, _, c in rows if t >= 0),
                       'cpu_max_pct': max((c for t, _, _, c in rows if t >= 0 and c is not None), default=None),
                       'watched_counters': watched,
                       'diagnostics_worst_level': _LEVEL_NAMES.get(worst),
                       'diagnostics_not_ok': sum(sampler.not_ok.get(f, 0) for f in fqns)}
    exits = {}
    for t_ns, _, party, _ in timeline.exits:
        exits[party] = max(exits.get(party, 0), t_ns)
    entered = [p.id for p in timeline.scenario.parties if p.enter_at_ns / NS <= t_end]
    closed = [p for p in entered if p in exits and exits[p] / NS <= t_end - RECEIPT_SETTLE_S]
    issued = [p for p in closed if p in receipts]
    return {
        'nodes': nodes,
        'visits': {'entered': len(entered), 'exited': sum(1 for p in entered if p in exits
                                                          and exits[p] / NS <= t_end),
                   f'exited_{RECEIPT_SETTLE_S:g}s_before_end': len(closed),
                   'receipts': len(receipts),
                   'receipts_of_those': len(issued),
                   'missing': sorted(set(closed) - set(issued)),
                   'needs_review': sum(1 for r in receipts.values() if r['status'] == 'NEEDS_REVIEW'),
                   'exit_to_receipt_s': percentiles(latencies)},
    }


def _fmt(value, spec: str, empty: str = '-') -> str:
    return empty if value is None else format(value, spec)


def print_table(summary: dict, t_end: float) -> None:
    nodes = summary['nodes']
    width = max(len(n) for n in nodes)
    print()
    print(f'{"process":<{width}}  {"RSS start":>9}  {"RSS end":>8}  {"slope 2nd half":>14}  '
          f'{"levelled":>8}  {"restarts":>8}  {"CPU mean":>8}  watched counters grew')
    for name, n in nodes.items():
        levelled = {True: 'yes', False: 'NO', None: '?'}[n['levelled']]
        grew = ', '.join(f'{c} +{w["growth"]:g}' for c, w in n['watched_counters'].items() if w['growth'] > 0)
        print(f'{name:<{width}}  {_fmt(n["rss_start_mb"], ".1f"):>6} MB  {_fmt(n["rss_end_mb"], ".1f"):>5} MB  '
              f'{_fmt(n["slope_mb_per_h"], "+.1f"):>9} MB/h  {levelled:>8}  {n["restarts"]:>8}  '
              f'{_fmt(n["cpu_mean_pct"], ".1f"):>6} %  {grew or "-"}')
    v = summary['visits']
    latency = v['exit_to_receipt_s']
    print()
    print(f'visits: {v["entered"]} entered, {v["exited"]} exited; receipts issued: {v["receipts"]} '
          f'({v["needs_review"]} NEEDS_REVIEW); of the {v[f"exited_{RECEIPT_SETTLE_S:g}s_before_end"]} visits '
          f'that exited {RECEIPT_SETTLE_S:g} s or more before the end, {v["receipts_of_those"]} have their receipt'
          + (f'; exit -> receipt p50 {latency["p50"]:.2f} s, p95 {latency["p95"]:.2f} s, max {latency["max"]:.2f} s'
             if latency['count'] else ''))
    store_nodes = {k: n for k, n in nodes.items() if k != HARNESS}
    growing = [k for k, n in store_nodes.items() if n['levelled'] is False]
    unknown = [k for k, n in store_nodes.items() if n['levelled'] is None]
    restarted = [f'{k} ({n["restarts"]})' for k, n in store_nodes.items() if n['restarts']]
    grew = [f'{k} {c} +{w["growth"]:g}' for k, n in store_nodes.items()
            for c, w in n['watched_counters'].items() if w['growth'] > 0]
    rule = (f'slope of RSS over the 2nd half < max({soak_stats.LEVEL_ABS_MB_PER_H:g} MB/h, '
            f'{soak_stats.LEVEL_REL_PER_H:.0%} of RSS per hour)')
    print(f'verdict ({rule}):')
    if growing:
        print('  memory NOT levelled off: ' + ', '.join(
            f'{k} {store_nodes[k]["slope_mb_per_h"]:+.1f} MB/h (threshold '
            f'{store_nodes[k]["threshold_mb_per_h"]:.1f})' for k in growing))
    else:
        print(f'  memory levelled off in {len(store_nodes) - len(unknown)} of {len(store_nodes)} nodes'
              + (f' (too few samples: {", ".join(unknown)})' if unknown else ''))
    if t_end / 2 < SHORT_WINDOW_S:
        print(f'  (a short run: slopes from a {t_end / 2 / 60:.1f}-minute window, extrapolated to an hour; '
              f'take them with a pinch of salt)')
    print('  restarts: ' + (', '.join(restarted) if restarted else 'none'))
    watched = sorted({c for n in store_nodes.values() for c in n['watched_counters']})
    print(f'  drop / bad-input counters ({len(watched)} watched: {", ".join(watched) or "none published"}): '
          + ('; '.join(grew) if grew else 'none grew'))
    missing = v['missing']
    print(f'  receipts: {v["receipts_of_those"]} of {v[f"exited_{RECEIPT_SETTLE_S:g}s_before_end"]} closed visits'
          + (f' (missing: {", ".join(missing[:10])}{" ..." if len(missing) > 10 else ""})' if missing else ''))


# ---------------------------------------------------------------- the run

def run(args) -> int:
    import rclpy

    from jwo_nodes.runner import run_scenario
    if not (args.minutes > 0 and args.load > 0 and args.sample_s > 0):
        print('error: --minutes, --load and --sample-s must be positive', file=sys.stderr)
        return 2
    seconds = args.minutes * 60.0
    out = Path(args.out) if args.out else Path(args.runs_dir) / time.strftime('soak-%Y%m%d-%H%M%S')
    out.mkdir(parents=True, exist_ok=True)
    (out / 'summary.json').unlink(missing_ok=True)   # an earlier summary must not pass for this one
    try:
        store_doc, scenario_doc, facts = soak_inputs(args.store, args.preset, args.seed, args.load, seconds)
        store_path = out / 'store.yaml'
        store_path.write_text(f'# {args.store} restocked for a soak (jwo soak): initial_units + '
                              f'every unit the scenario takes\n' + yaml.safe_dump(store_doc, sort_keys=False))
        store = load_store_config(store_path)
        scenario_path = out / 'scenario.yaml'
        scenario_path.write_text(yaml.safe_dump(scenario_doc, sort_keys=False))
        timeline = Timeline(load_scenario(scenario_path, store), store)
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    p = PRESETS[args.preset]
    print(f'soak: {args.minutes:g} min at {args.load:g}x the {args.preset} preset\'s traffic on {args.store}: '
          f'a party every {facts["entry_gap_s"][0]:g}-{facts["entry_gap_s"][1]:g} s (preset '
          f'{p.entry_gap_s[0]:g}-{p.entry_gap_s[1]:g} s), {facts["parties"]} parties in the scenario, '
          f'{facts["units_taken"]} units taken (bins restocked for it; heaviest {facts["heaviest_bin"]["id"]} '
          f'{facts["heaviest_bin"]["start_grams"] / 1000:.0f} kg); a sample every {args.sample_s:g} s; '
          f'run folder {out}', flush=True)
    if facts['bins_capped']:
        print(f'note: bins {", ".join(facts["bins_capped"])} are stocked up to {MAX_BIN_GRAMS / 1000:.0f} kg '
              'only and run empty before the end: their takes stop then', flush=True)
    receipts, latencies = {}, []

    def on_receipt(party, receipt, exit_to_receipt_s) -> None:
        receipts[party] = receipt
        if exit_to_receipt_s is not None:
            latencies.append(exit_to_receipt_s)

    failure = None
    interrupted = False
    wall_start = time.monotonic()
    rclpy.init()
    sampler = None
    try:
        sampler = Sampler(out, seconds, args.sample_s, receipts)
        try:
            result = run_scenario(store, str(store_path.resolve()), str(scenario_path.resolve()), timeline,
                                  time_scale=1.0, start_delay_s=args.start_delay,
                                  with_cameras=args.cameras or args.vision, vision=args.vision,
                                  log_path=out / 'nodes.log', grace_s=20.0, state_dir=out / 'state',
                                  on_receipt=on_receipt, on_turn=sampler,
                                  shelves_per_process=args.shelves_per_process)
            failure = result.failure or 'the run ended before the wall time (every party had its receipt?)'
        except WallTimeUp:
            pass
        except KeyboardInterrupt:
            interrupted = True
            failure = 'interrupted'
    finally:
        if sampler is not None:
            sampler.close()
        rclpy.try_shutdown()
    if sampler.start_ns is None:
        print(f'error: the soak never started: {failure}', file=sys.stderr)
        return 1
    t_end = sampler.ended_at_s if sampler.ended_at_s is not None else max(
        (rows[-1][0] for rows in sampler.series.values() if rows), default=0.0)
    summary = {'command': 'jwo soak', 'store': args.store, 'minutes': args.minutes,
               'sample_s': args.sample_s, 'cameras': bool(args.cameras or args.vision),
               'vision': bool(args.vision), 'load': facts,
               'ran_s': round(t_end, 1), 'wall_s': round(time.monotonic() - wall_start, 1),
               'failure': failure,
               'levelled_rule': {'window': 'second half of the run, last process of the node',
                                 'abs_mb_per_h': soak_stats.LEVEL_ABS_MB_PER_H,
                                 'rel_per_h': soak_stats.LEVEL_REL_PER_H,
                                 'levelled_if': 'slope < max(abs_mb_per_h, rel_per_h x mean RSS)'},
               'watched_words': list(soak_stats.WATCHED_WORDS),
               **summarise(sampler, t_end, timeline, receipts, latencies)}
    tmp = out / '.summary.json.tmp'
    tmp.write_text(json.dumps(summary, indent=2, default=str) + '\n')
    os.replace(tmp, out / 'summary.json')
    print_table(summary, t_end)
    print(f'files: {out / "samples.csv"}, {out / "counters.csv"}, {out / "summary.json"}, {out / "nodes.log"}')
    if failure:
        print(f'the soak did not run its {args.minutes:g} minutes: {failure} (after {t_end / 60:.1f} min)',
              file=sys.stderr)
        return 130 if interrupted else 1
    return 0
