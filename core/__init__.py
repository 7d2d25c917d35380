"""The ground floor every app stands on: record schema and file reader, header names, the decision rule,
Kafka connection settings and the settings machinery.

``producer``, ``training`` and ``detector`` import this package and not each other (the detector also
reads model bundles through ``model.bundle``: the bundle is training's product and the detector's
input). It imports nothing heavy: numpy, pandas, pydantic and the Kafka client, never TensorFlow.
"""
