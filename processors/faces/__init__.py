"""Faces in images: packaged MediaPipe models (``models``) and landmarks (``landmarks``).

Used by perception (cues from the user's camera) and by replica creation.
"""
