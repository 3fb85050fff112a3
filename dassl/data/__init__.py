from .data_manager import DataManager, DatasetWrapper, ImageReadError  # noqa: F401
