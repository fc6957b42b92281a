"""Redis answers that mean "this node takes no writes now", told apart from other errors.

A primary demoted by a Sentinel failover answers READONLY; one that hears from too few replicas
under ``min-replicas-to-write`` answers NOREPLICAS; a replica cut from its primary may answer
MASTERDOWN. To a consumer or a producer each means what a lost connection means: connect again
(through Sentinel, to whichever node is primary now) and retry, not die or answer 500. redis-py
names READONLY and MASTERDOWN; NOREPLICAS it leaves a bare ResponseError, so it is named here.
"""

from __future__ import annotations

from redis._parsers.base import BaseParser
from redis.exceptions import MasterDownError, ReadOnlyError, ResponseError


class NoReplicasError(ResponseError):
    """NOREPLICAS: the primary refuses writes while fewer replicas than ``min-replicas-to-write``
    are in sync."""


# A subclass of ResponseError, so every handler that caught it before still does.
BaseParser.EXCEPTION_CLASSES.setdefault("NOREPLICAS", NoReplicasError)

#: Errors of a Redis node that is up but will not take writes: treated as connection errors.
UNWRITABLE_ERRORS: tuple[type[ResponseError], ...] = (ReadOnlyError, NoReplicasError, MasterDownError)
