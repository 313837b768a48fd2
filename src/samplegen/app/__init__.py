"""The front doors: command, Python API, instrument server, exports, tuning."""
