//! Where an upload's shares go: Tahoe's servers-of-happiness measure and share placement
//! (`allmydata/immutable/happiness_upload.py`).
