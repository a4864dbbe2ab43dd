"""Operations: certificates, node keys, Flower process control and local federations.

Nothing here imports training code, TensorFlow or Keras.
"""
