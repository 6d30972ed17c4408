"""Keep every run offline and quiet (see `steps.offline`, where it lives so that every layer can use it)."""

from steps.offline import FORCED, OUR_LOGGERS, go_offline, quiet_warnings

__all__ = ["FORCED", "OUR_LOGGERS", "go_offline", "quiet_warnings"]
