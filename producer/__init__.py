"""What applications use to create Tasklane tasks: `TaskProducer`, built from the stack's outputs."""

from producer.config import ProducerConfig
from producer.producer import Enqueued, ItemResult, TaskProducer, TaskSpec

__all__ = ["Enqueued", "ItemResult", "ProducerConfig", "TaskProducer", "TaskSpec"]
