"""What the producer, the handler framework and the emulator's console share, with no web framework: the task
context Cloud Tasks sends, structured logs, and the dead-letter record with its stores (files, Firestore)."""
