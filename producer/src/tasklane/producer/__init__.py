"""What applications use to create Tasklane tasks: `TaskProducer`, built from the stack's outputs."""

from tasklane.producer.config import ProducerConfig
from tasklane.producer.producer import Enqueued, ItemResult, ProgressFailed, TaskProducer, TaskSpec

__all__ = ["Enqueued", "ItemResult", "ProducerConfig", "ProgressFailed", "TaskProducer", "TaskSpec"]
