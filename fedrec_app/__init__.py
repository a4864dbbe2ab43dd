"""fedrec: a federated movie recommender (Flower + Keras + FastAPI)."""

__version__ = "0.1.0"
