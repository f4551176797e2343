"""Data: tasks, CSV reading, splitting and tokenizing."""

from modelshrink.data.tasks import DATA_ENV, TASKS, DataConfig, TaskData, load_task
from modelshrink.data.text import Tokenizer, read_text_csv, split_indices

__all__ = ["DATA_ENV", "TASKS", "DataConfig", "TaskData", "Tokenizer", "load_task", "read_text_csv", "split_indices"]
