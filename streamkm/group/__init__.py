"""One model per consumer group: chunk statistics, the reducer's fold, versioned models.

Workers summarise fixed chunks of one partition's records against the model version
they hold (:mod:`.chunker`) and send :class:`ChunkStats`; the member assigned the
stats partition folds them in log order (:class:`GroupModel`) and publishes
:class:`ModelVersion` s. Pure and synchronous: the Kafka side is in
:mod:`streamkm.service.group`. Design: docs/operations.md ("The group model").
"""

from streamkm.group.fold import OUTCOMES, FoldOutcome, GroupModel
from streamkm.group.messages import ChunkStats, ModelVersion, parse_partition_key, partition_key
from streamkm.group.wire import WireError

__all__ = ["OUTCOMES", "ChunkStats", "FoldOutcome", "GroupModel", "ModelVersion", "WireError",
           "parse_partition_key", "partition_key"]
