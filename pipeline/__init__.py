"""The ML pipeline: read a labeled image zip, balance it with per-class GANs, compare classifiers.

Plain Python + PyTorch. Nothing here imports FastAPI, Celery or SQLAlchemy: the CLI, the
Celery task, the benchmarks and the tests all call `pipeline.run.run_pipeline`.
"""
