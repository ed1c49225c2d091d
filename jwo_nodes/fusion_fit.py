"""`jwo fusion-fit`: fits one of the settings fusion weighs who made a change by (where
the shoppers stood, whose hand was in the bin, how sure the tracker was of who they
are) to scenarios and their ground truth, as the documented values of those settings
were fitted. Each change's evidence, as fusion last weighed it, is captured once from a
`jwo fusion-check` run; it is then weighed again under each value, and the log loss of
the visit that truly made the change is printed (lower is better), with how many
changes that visit was less than SURE for and how many went to somebody else first.

    jwo fusion-fit --store config/stores/corner.yaml --vision --setting hand_sigma_m \\
        --values 0.08,0.1,0.12,0.16 test/scenarios/corner/*.yaml

Only changes one shopper made count: two at once have no one maker. ``--save`` keeps
the captures in a file and ``--load`` weighs them instead of running scenarios, so a
sweep of another setting takes seconds. A setting fitted on the scenarios it is then
judged on looks better than it is: check it on held-out seeds (`jwo scenario`).
"""
import dataclasses
import math
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.fusion import FusionSettings
from jwo_nodes.core.fusion.evidence import REACH_SETTINGS, ReachBasis
from jwo_nodes.core.fusion.receipts import SURE
from jwo_nodes.core.sim import NS
from jwo_nodes.fusion_check import add_run_arguments, in_processes, run_scenario, scenario_jobs, tracked, visit_parties
from jwo_nodes.simbag import gate_events

# A true change on the bin this near a weighed change's span is one that made it.
_TRUTH_MARGIN_NS = NS // 2
# The probability a maker no candidate names is counted at (its log loss is bounded).
_LEAST_PROBABILITY = 1e-6


@dataclass(frozen=True)
class Capture:
    """One change as fusion last weighed it, and the visit whose shopper made it."""
    scenario: str
    event_id: str
    bin_id: str
    basis: ReachBasis
    maker: str


@dataclass(frozen=True)
class Fit:
    """How well one value of a setting weighs the captured changes' makers."""
    log_loss: float        # mean over the changes of -log P(maker)
    unsure: int            # changes whose maker got less than SURE
    others_first: int      # changes somebody else was the likelier maker of
    changes: int


def add_arguments(parser) -> None:
    parser.add_argument('scenarios', nargs='*', help='scenario YAML files (none with --load)')
    parser.add_argument('--setting', required=True, choices=REACH_SETTINGS, metavar='NAME',
                        help='the FusionSettings field to fit: ' + ', '.join(REACH_SETTINGS))
    parser.add_argument('--values', required=True, help='comma-separated values to weigh the changes with')
    add_run_arguments(parser)
    parser.add_argument('--save', metavar='FILE', help='also write the captured changes to this file')
    parser.add_argument('--load', metavar='FILE', help='weigh the changes a --save wrote instead of running scenarios')


def captures_of(job: tuple) -> tuple:
    """(Captures, changes weighed) of one scenario (path, store path, vision, cache):
    in this process or in a worker of --jobs."""
    path, store_path, vision, cache = job
    timeline, positions = tracked(path, load_store_config(store_path), vision, cache)
    weighed = []
    run_scenario(timeline, positions, weighed)
    last = {(change.event_id, change.bin_id): change for change in weighed}
    events, _ = gate_events(timeline, epoch_ns=0)
    code_of_party = {party: code for code, party in visit_parties(timeline, events).items()}
    found = []
    for change in last.values():
        parties = {e.party_id for e in timeline.weight_events
                   if e.bin_id == change.bin_id and e.start_ns <= change.end_ns + _TRUTH_MARGIN_NS
                   and e.end_ns >= change.start_ns - _TRUTH_MARGIN_NS}
        if len(parties) == 1 and code_of_party.get(next(iter(parties))):
            found.append(Capture(Path(path).stem, change.event_id, change.bin_id, change.basis,
                                 code_of_party[next(iter(parties))]))
    return found, len(last)


def fit(captures: list, settings: FusionSettings) -> Fit:
    loss, unsure, others_first = 0.0, 0, 0
    for capture in captures:
        visits = capture.basis.reach(settings).visits
        p = next((v.probability for v in visits if v.visit_code == capture.maker), 0.0)
        loss -= math.log(max(p, _LEAST_PROBABILITY))
        unsure += p < SURE
        others_first += not visits or visits[0].visit_code != capture.maker
    return Fit(loss / len(captures) if captures else 0.0, unsure, others_first, len(captures))


def _values(text: str) -> list:
    values = [float(v) for v in text.split(',') if v.strip()]
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError
    return values


def run(args) -> int:
    try:
        values = _values(args.values)
    except ValueError:
        print(f'error: --values {args.values!r}: expected comma-separated numbers, none negative', file=sys.stderr)
        return 2
    if args.load and args.scenarios:
        print('error: give scenarios or --load, not both', file=sys.stderr)
        return 2
    unsaved = False
    if args.load:
        try:
            captures = pickle.loads(Path(args.load).read_bytes())
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as error:
            print(f'error: --load {args.load}: {error}', file=sys.stderr)
            return 2
        if not isinstance(captures, list) or not all(isinstance(c, Capture) for c in captures):
            print(f'error: --load {args.load}: not the changes a jwo fusion-fit --save wrote', file=sys.stderr)
            return 2
        print(f'{len(captures)} changes one shopper made, from {args.load}')
    else:
        if not args.scenarios:
            print('error: give scenario files (or --load)', file=sys.stderr)
            return 2
        if args.save and not Path(args.save).resolve().parent.is_dir():
            print(f'error: --save {args.save}: no folder {Path(args.save).parent}', file=sys.stderr)
            return 2
        jobs = scenario_jobs(args)
        if jobs is None:
            return 2
        captures = []
        results = in_processes(captures_of, jobs, args.jobs)
        for index, (path, (found, weighed)) in enumerate(zip(args.scenarios, results), 1):
            captures += found
            print(f'[{index}/{len(jobs)}] {Path(path).name}: {weighed} changes, {len(found)} one shopper made',
                  flush=True)
        if args.save:
            try:
                Path(args.save).write_bytes(pickle.dumps(captures, protocol=pickle.HIGHEST_PROTOCOL))
                print(f'wrote {len(captures)} changes to {args.save}')
            except OSError as error:     # the fit below is still printed
                print(f'error: --save {args.save}: {error}', file=sys.stderr)
                unsaved = True
    if not captures:
        print('error: no change one shopper made to fit to', file=sys.stderr)
        return 2
    default = getattr(FusionSettings(), args.setting)
    fits = {}
    for value in sorted(set(values) | {default}):
        try:
            fits[value] = fit(captures, dataclasses.replace(FusionSettings(), **{args.setting: value}))
        except ArithmeticError as error:
            print(f'error: {args.setting} = {value:g} cannot weigh a change ({error})', file=sys.stderr)
            return 2
    best = min(fits, key=lambda value: (fits[value].log_loss, value != default))
    for value, f in fits.items():
        marks = ' '.join(mark for mark, on in (('(default)', value == default), ('(best)', value == best)) if on)
        print(f'{args.setting} = {value:g}: log loss of the maker {f.log_loss:.4f}; maker less than {SURE:g} '
              f'sure in {f.unsure} of {f.changes} changes, somebody else likelier in {f.others_first} {marks}'.rstrip())
    return 2 if unsaved else 0
