"""Edge fusion as a hypothesis engine (see core.py). The package's modules: types
(inputs, outputs, settings), tracks (position histories), evidence (likelihoods of
visits and products for one change), ledger (carts and strays of one hypothesis),
solver (the beam of hypotheses), cost (the review decision), receipts (lines and
doubts), core (FusionCore, which wires them to the inputs), journal (FusionJournal:
a FusionCore whose inputs survive a restart)."""
from jwo_nodes.core.fusion.core import FusionCore
from jwo_nodes.core.fusion.journal import FusionJournal, JournalError
from jwo_nodes.core.fusion.types import (AMBIGUOUS_ATTRIBUTION, AMBIGUOUS_PRODUCT, FINAL,
                                         FUSION_RESTARTED, ID_NOT_VERIFIED, LOW_CONFIDENCE, NEEDS_REVIEW,
                                         NO_CANDIDATE, NS, SENSOR_STALE, UNIDENTIFIED_ITEM,
                                         UNMATCHED_PUT_BACK, UNRESOLVED_EXIT, CartSnapshot,
                                         ChangeInput, Doubt, FusionSettings, GateInput,
                                         IdCheckRequestOut, IdDecisionInput, IdVerdict, Line,
                                         Outputs, ProductCandidate, Reason, ReceiptOut,
                                         TrackInput)

__all__ = ['FusionCore', 'FusionJournal', 'JournalError', 'AMBIGUOUS_ATTRIBUTION',
           'AMBIGUOUS_PRODUCT', 'FINAL', 'FUSION_RESTARTED', 'ID_NOT_VERIFIED', 'LOW_CONFIDENCE', 'NEEDS_REVIEW',
           'NO_CANDIDATE', 'NS', 'SENSOR_STALE', 'UNIDENTIFIED_ITEM', 'UNMATCHED_PUT_BACK',
           'UNRESOLVED_EXIT', 'CartSnapshot', 'ChangeInput', 'Doubt', 'FusionSettings',
           'GateInput', 'IdCheckRequestOut', 'IdDecisionInput', 'IdVerdict', 'Line', 'Outputs', 'ProductCandidate', 'Reason', 'ReceiptOut',
           'TrackInput']
