"""DeepFM ranking model: feature spec, data, Keras layers, training, evaluation and export."""
