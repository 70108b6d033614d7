"""Audio backends: speech (speech.py, with Piper voices in piper.py) and music (music.py)."""
