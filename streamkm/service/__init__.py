"""The daemon: consume, process, deliver, checkpoint and commit."""

from streamkm.service.worker import Worker

__all__ = ["Worker"]
