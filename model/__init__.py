"""The model at run time: what a trained bundle is and how it scores, shared by training and the detector.

``bundle`` (the format and its verified reader), ``preprocessing`` (the transform training fits and the
detector applies: one code path, saved in the bundle), ``scorer`` (the compiled scoring function and its
explanations), ``calibration`` (the normal rows' score distribution: thresholds at any false-positive rate,
each alert's rarity), ``profile`` (the drift baseline), ``store`` (versions and the promoted pointer) and
``backend`` (which Keras backend scores, and on what device).

It depends on numpy, pandas and Keras only; never on TensorFlow directly (``backend`` imports it only when
it is the Keras backend), scikit-learn or matplotlib, so a serving image can carry Keras on JAX alone.
Keras itself is imported on first use inside functions: the detector chooses the backend and limits its
threads before anything imports it (JAX reads its thread flags once, at import).
"""
