"""FastAPI gateway: serves recommendations from one verified checkpoint with numpy only.

Never imports TensorFlow, Keras, Flower or pandas: it reads ``weights.npz`` + ``manifest.json``
through ``fedrec_app.core.checkpoint`` and scores with ``fedrec_app.core.scoring``.
"""
