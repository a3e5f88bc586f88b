"""Results: what a pipeline found on a frame, and where it goes.

The data model (``data``: regions, classifications, keypoints, masks, class maps, frame
mappings) and its JSON; joining branches' results onto frames (``aggregate``); the JSON-lines
records and files (``publish``), MQTT (``mqtt``) and drawing them on frames (``overlay``).
Imports the foundation modules (errors, props, environment, caps) only; no GStreamer.
"""
