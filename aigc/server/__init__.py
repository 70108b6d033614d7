"""`aigc serve`: a shared, crash-safe generation service (FastAPI + uvicorn); see app.py."""
